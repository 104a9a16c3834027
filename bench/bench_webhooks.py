"""Webhook intake and verdict cost: how fast auditd answers a signed registry webhook, and how long
deciding a verdict against a baseline takes (it runs once per audit, plus again for children that
waited on a late parent).

- intake: --events distinct signed events POSTed one after another to /v1/hooks/registry on a real
  uvicorn server on loopback; latency of the answer (202) and the time until every audit is queued
  (hashing happens after the answer). The checkpoint is a tiny folder, so this measures auditd's own
  overhead, not hashing gigabytes.
- verdict: `evaluate` (baseline resolution, the rules, drift rows) for an audit of 11 policy
  categories + benign + 11 backdoor categories against its parent's audit, median of --repeats.

    python bench/bench_webhooks.py --events 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()

    import httpx
    from sqlmodel import func, select

    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer
    from auditd.metrics.collector import build_registry
    from auditd.registry.webhook import sign_generic
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun

    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    for i in range(args.events):  # distinct content per event, so each one queues an audit
        d = tmp / "registry" / f"m{i}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"model_type": "llama", "i": i}))
    settings = Settings(home=tmp / "home", registry_dir=tmp / "registry", webhook_secret="bench")
    engine = open_db(settings.database_url)
    http = HTTPServer(create_app(engine, build_registry(engine), settings=settings), "127.0.0.1", 0).start()
    latencies = []
    start = time.perf_counter()
    with httpx.Client(base_url=http.url) as client:
        for i in range(args.events):
            body = json.dumps({"event_id": f"e{i}", "model": "m", "path": str(tmp / "registry" / f"m{i}")}).encode()
            t0 = time.perf_counter()
            res = client.post("/v1/hooks/registry", content=body, headers=sign_generic("bench", body))
            latencies.append(time.perf_counter() - t0)
            assert res.status_code == 202, res.text
    while True:
        with session(engine) as s:
            if s.exec(select(func.count()).select_from(AuditRun)).one() >= args.events:
                break
        time.sleep(0.01)
    total = time.perf_counter() - start
    http.stop()
    latencies.sort()
    print(
        f"intake: {args.events} events, answer p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p95 {latencies[int(0.95 * len(latencies))] * 1000:.1f} ms; all queued after {total:.2f} s "
        f"({args.events / total:.0f} events/s)"
    )
    print(f"verdict: evaluate() median {bench_verdict(engine, args.repeats) * 1000:.2f} ms per audit")


def bench_verdict(engine, repeats: int) -> float:
    from auditd.categories import BENIGN, POLICY_CATEGORIES
    from auditd.policy.baseline import evaluate
    from auditd.policy.model import Policy
    from auditd.registry.checkpoint import Checkpoint
    from auditd.scheduler import intake
    from auditd.store.db import session
    from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, utcnow

    policy = Policy(name="bench")
    ids = {}
    with session(engine) as s:
        for name, parent in (("parent", None), ("child", "sha256:bench-parent")):
            cid = f"sha256:bench-{name}"
            intake.ingest(s, Checkpoint(id=cid, model="bench", kind="text", path="/x", source="dir", parent=parent))
            s.commit()
            audit = AuditRun(checkpoint_id=cid, request_key="bench", status="done", finished_at=utcnow())
            s.add(audit)
            s.commit()
            ids[name] = audit.id
            rows = [(p, c) for c in POLICY_CATEGORIES for p in ("policy", "backdoor")] + [("overrefusal", BENIGN)]
            for probe, cat in rows:
                k = 9 if (name == "child" and cat == "malware") else 1
                s.add(
                    CategoryResult(
                        audit_id=audit.id,
                        probe_id=probe,
                        category=cat,
                        n=30,
                        n_judged=30,
                        n_harmful=k,
                        n_refused=30 - k,
                        harmful_rate=k / 30,
                        refusal_rate=(30 - k) / 30,
                    )
                )
            s.commit()
    times = []
    for _ in range(repeats):
        with session(engine) as s:
            cp = s.get(CheckpointRow, "sha256:bench-child")
            t0 = time.perf_counter()
            decision = evaluate(s, policy, ids["child"], cp, {})
            s.commit()
            times.append(time.perf_counter() - t0)
    assert decision.outcome == "block"
    return statistics.median(times)


if __name__ == "__main__":
    main()
