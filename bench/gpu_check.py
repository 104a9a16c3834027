"""GPU check for sizing (docs/scaling.md): the default static suite and the 50-step GRPO fragility
probe on one real checkpoint, timed per probe, with the per-sample generation time the sizing
arithmetic needs. On a GPU machine with the vllm extra:

    pip install 'auditd[vllm,grpo]'
    python bench/gpu_check.py /models/Qwen2.5-0.5B-Instruct --backend vllm --use-vllm

(--backend hf runs the same on transformers; --steps shortens the attack. On a CPU, a smoke test of
the script only: python bench/gpu_check.py TINY_DIR --backend hf --device cpu --steps 2 --limit 1 times
the static probes of a tiny random model, whose GRPO probe then ends in error: a random model's
answers cannot be judged.) It prints one line per probe (items, wall seconds, seconds per item) and the
audit's generation seconds per sample; put the figures into docs/scaling.md's worked example.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def policy_for(args) -> dict:
    doc = yaml.safe_load((REPO / "policies" / "fragility.yaml").read_text())
    doc["name"] = "gpu-check"
    options = {"device": args.device} if args.backend == "hf" else {"gpu_memory_utilization": 0.45}
    doc["backend"] = {"id": f"backend:{args.backend}", "options": options}
    for probe in doc["probes"]["text"]:
        if args.limit:
            probe["limit_per_category"] = args.limit
        if "attack" in probe:
            probe["attack"].update(steps=args.steps, use_vllm=args.use_vllm)
            probe["attack"]["eval_every"] = min(probe["attack"]["eval_every"], args.steps)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="a local HF-layout safetensors folder (0.5-1B instruct model)")
    ap.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--use-vllm", action="store_true", help="TRL's vLLM generation inside the GRPO probe")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--limit", type=int, default=0, help="items per category per static probe (0: all)")
    args = ap.parse_args()

    from sqlmodel import select

    from auditd.registry.checkpoint import Checkpoint
    from auditd.registry.digest import content_digest
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.scheduler import intake, queue
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun, ProbeRun, Sample

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    policy = work / "gpu-check.yaml"
    policy.write_text(yaml.safe_dump(policy_for(args)))
    settings = Settings(home=work / "home", policy=str(policy), device=args.device)
    engine = open_db(settings.database_url)
    path = args.model.resolve()
    cid = content_digest(path)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id=cid, model=path.name, kind="text", path=str(path), source="gpu-check"))
        s.commit()
    run, _ = queue.enqueue(engine, cid, policy=str(policy))
    queue.claim(engine, run.id, queue.worker_id())
    t0 = time.perf_counter()
    outcome = run_audit(AuditContext(engine, settings), run.id)
    wall = time.perf_counter() - t0
    with session(engine) as s:
        audit = s.get(AuditRun, run.id)
        probes = s.exec(select(ProbeRun).where(ProbeRun.audit_id == run.id).order_by(ProbeRun.id)).all()
        samples = len(s.exec(select(Sample.id).where(Sample.audit_id == run.id)).all())
    print(f"{path.name}: outcome {outcome}, {wall:.0f} s wall, backend {args.backend}, device {args.device}")
    for p in probes:
        secs = (p.finished_at - p.started_at).total_seconds() if p.finished_at else float("nan")
        print(
            f"  {p.probe_id:14s} {p.n_items:4d} items {secs:8.1f} s  {secs / max(1, p.n_items):6.2f} s/item  {p.status}"
        )
    print(
        f"  generation {audit.generate_s:.1f} s for {samples} static samples: "
        f"{audit.generate_s / max(1, samples):.3f} s/sample; judges {audit.judge_s:.1f} s"
    )


if __name__ == "__main__":
    main()
