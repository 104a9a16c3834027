"""Capacity of one daemon, measured: audits/hour with the process executor and with executor `ray`
at 1, 2 and 4 concurrent audits, side by side in one run, and auditd's own overhead per audit.

The model is the fake backend with a fixed latency per generation batch (`latency_s`), so every
audit needs the same, known generation time and the figures measure auditd (claims, child
processes or Ray tasks, imports, the store, judges, verdicts), not a model. Each configuration gets
a fresh SQLite store and `--audits` distinct checkpoints, queued at once; the daemon's scheduler
(AuditService) dispatches them with `device_slots` = workers. Ray runs as a local instance with as
many CPUs as workers (Ray reserves 1 CPU per audit task), started and stopped per configuration.

    python bench/bench_scale.py            # 8 audits per configuration, workers 1, 2, 4
    python bench/bench_scale.py --quick    # 4 audits, workers 1, 2

Per-audit overhead = wall time per audit with 1 worker - generation time per audit (stored in
audit_runs.generate_s). Ratios compare each configuration's audits/hour with its executor at 1 worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

POLICY = """\
name: bench-scale
probes:
  text:
    - id: policy
      limit_per_category: 1
    - id: overrefusal
      limit_per_category: 2
backend: {{id: "backend:fake", options: {{mode: comply, latency_s: {latency}}}}}
generation: {{max_new_tokens: 8, batch_size: 4}}
budget: {{audit_timeout_s: 600}}
"""


def run_config(work: Path, model: Path, policy: Path, executor: str, workers: int, audits: int) -> dict:
    from sqlmodel import select

    from auditd.registry.checkpoint import Checkpoint
    from auditd.runner.audit import AuditContext
    from auditd.scheduler import intake, queue
    from auditd.scheduler.service import AuditService
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun

    home = work / f"{executor}-{workers}"
    settings = Settings(
        home=home,
        policy=str(policy),
        executor=executor,
        device_slots=workers,
        ray_local_cpus=workers,
        max_attempts=1,
        log_level="WARNING",
    )
    engine = open_db(settings.database_url)
    with session(engine) as s:
        for i in range(audits):  # distinct checkpoints: no audit may reuse another's samples
            intake.ingest(
                s,
                Checkpoint(
                    id=f"sha256:{executor}-{workers}-{i}", model="tiny", kind="text", path=str(model), source="bench"
                ),
            )
        s.commit()
    for i in range(audits):
        queue.enqueue(engine, f"sha256:{executor}-{workers}-{i}", policy=str(policy))
    if executor == "ray":
        from auditd.runner.ray_executor import connect

        connect(settings, engine)  # the cluster's start-up is the daemon's, not the audits'
    svc = AuditService(engine, settings, [], AuditContext(engine, settings))
    t0 = time.perf_counter()
    svc.start()
    try:
        while True:
            with session(engine) as s:
                rows = s.exec(select(AuditRun)).all()
            if all(a.status not in ("queued", "running") for a in rows):
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    finally:
        svc.stop(wait=True)
        if executor == "ray":
            import ray

            ray.shutdown()
    bad = [a.outcome for a in rows if a.outcome != "block"]
    assert not bad, f"{executor} x{workers}: outcomes {bad} (the fake model complies: every audit blocks)"
    gen = statistics.mean(a.generate_s for a in rows)
    return {"wall": wall, "per_hour": audits / wall * 3600, "gen": gen, "per_audit": wall / audits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--audits", type=int, default=None, help="audits per configuration (default 8; quick 4)")
    ap.add_argument("--workers", default=None, help="comma-separated concurrent audits (default 1,2,4; quick 1,2)")
    ap.add_argument("--latency", type=float, default=0.5, help="seconds per generation batch of the fake model")
    ap.add_argument("--executors", default="process,ray")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    audits = args.audits or (4 if args.quick else 8)
    workers = [int(w) for w in (args.workers or ("1,2" if args.quick else "1,2,4")).split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback instance; no token file left in ~/.ray

    from auditd.testing import make_tiny_llama

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    model = make_tiny_llama(work / "tiny")
    policy = work / "policy.yaml"
    policy.write_text(POLICY.format(latency=args.latency))
    results: dict[tuple[str, int], dict] = {}
    for executor in args.executors.split(","):
        for n in workers:
            results[(executor, n)] = r = run_config(work, model, policy, executor, n, audits)
            print(f"  {executor:7s} x{n}: {r['wall']:6.1f} s for {audits} audits", flush=True)
    load = os.getloadavg()
    print(
        f"\n{audits} audits per configuration, fake model {args.latency} s per batch; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs"
    )
    print(f"{'executor':9s} {'workers':>7s} {'audits/h':>9s} {'vs 1 worker':>11s} {'s/audit':>8s} {'generation':>10s}")
    for (executor, n), r in results.items():
        base = results.get((executor, 1))
        ratio = f"{r['per_hour'] / base['per_hour']:.2f}x" if base else "-"
        print(f"{executor:9s} {n:7d} {r['per_hour']:9.0f} {ratio:>11s} {r['per_audit']:8.2f} {r['gen']:9.2f}s")
    for executor in args.executors.split(","):
        if r := results.get((executor, 1)):
            print(
                f"overhead per audit, {executor}: {r['per_audit'] - r['gen']:.2f} s "
                f"(wall per audit {r['per_audit']:.2f} s - generation {r['gen']:.2f} s, 1 worker)"
            )


if __name__ == "__main__":
    main()
