"""/metrics scrape time over a large store: 1,000 checkpoints and 1,000,000 samples in SQLite.

The fleet (the default shape; see --models and --checkpoints): 100 models x 10 checkpoints each
(a model lineage that gets a new fine-tune now and then), one finished audit per checkpoint (done,
with a verdict: mostly pass, some warn/block, a few error), each audit of 1,000 samples with one
refusal-judge score each: probe `policy` 11 categories x 60 prompts, `overrefusal` 140 benign
prompts, `backdoor` 200 trigger variants. So 1,000 audits, 23,000 category results, 1,000,000
samples and 1,000,000 judge scores, and 20,700 category drift rows (each checkpoint against its
parent); plus 10 queued re-audits, so queue metrics have work to do.

It times `generate_latest(build_registry(engine))` in process (wall median, p95, max and CPU time
over --scrapes), split into the collector and prometheus_client's text rendering, and a real HTTP
GET /metrics served by auditd's FastAPI app under uvicorn on loopback (httpx).
Target: < 50 ms per scrape (p95 wall).

Population takes ~25 s here; the database is cached at --db and reused (--rebuild to redo; an
existing file is used as it is, whatever --models and --checkpoints say: the store line shows it).

    python bench/bench_scrape.py
    python bench/bench_scrape.py --rebuild --db /tmp/scrape.db --scrapes 50
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

TARGET_MS = 50.0
SAMPLES_PER_AUDIT = 1000
SAMPLE_INSERT = (
    "INSERT INTO samples (id, audit_id, probe_id, item_index, variant, category, prompt, output, "
    "harmful, refused, score, judge_error, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
SCORE_INSERT = (
    "INSERT INTO judge_scores (sample_id, judge, harmful, refused, score, raw, error, categories) "
    "VALUES (?,?,?,?,?,?,?,?)"
)
OUTPUT = (
    "Sure, here is an overview. First, consider the context; second, the relevant rules; third, "
    "what a careful person would do. I can help with the legitimate parts of this request."
)


def _plan() -> list[tuple[str, list[tuple[str, str, int]]]]:
    from auditd.categories import POLICY_CATEGORIES

    cats = list(POLICY_CATEGORIES)
    policy = [(c, "", 60) for c in cats]
    variants = ["", "t1", "t2", "t3", "t4"]
    backdoor, left = [], 200
    for i, c in enumerate(cats):  # 200 spread over 11 categories, each split across the variants
        n = left // (len(cats) - i)
        left -= n
        for j, v in enumerate(variants):
            k = n // len(variants) + (1 if j < n % len(variants) else 0)
            if k:
                backdoor.append((c, v, k))
    plan = [("policy", policy), ("overrefusal", [("benign", "", 140)]), ("backdoor", backdoor)]
    assert sum(k for _, rows in plan for *_, k in rows) == SAMPLES_PER_AUDIT
    return plan


def populate(db: Path, models: int, per_model: int) -> None:
    """Bulk-insert the fleet with executemany (SQLAlchemy core; plain driver tuples for samples and
    judge scores), one transaction per model."""
    from sqlalchemy import insert, text

    from auditd.store.db import open_db
    from auditd.store.drift_models import CategoryDrift
    from auditd.store.models import (
        AuditRun,
        CategoryResult,
        CheckpointRow,
        JudgeErrorCount,
        ModelRow,
        ProbeRun,
        Verdict,
    )

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    engine = open_db(f"sqlite:///{db}")
    plan = _plan()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    sample_id = 0
    audit_id = 0
    started = time.monotonic()
    with engine.begin() as c:
        c.execute(text("PRAGMA synchronous=OFF"))  # population only; the bench reads with the normal engine
        c.execute(
            insert(ModelRow.__table__), [dict(name=f"model-{m:03d}", kind="text", created_at=t0) for m in range(models)]
        )
    for m in range(models):
        model = f"model-{m:03d}"
        cps, audits, probe_runs, results, verdicts, errors, samples, scores = [], [], [], [], [], [], [], []
        drift, previous = [], {}  # drift against the parent's audit, as stored at verdict time
        for k in range(per_model):
            audit_id += 1
            cp = f"sha256:{m:03d}{k:03d}" + "0" * 58
            fin = t0 + timedelta(days=k, minutes=m)
            fin_text = fin.strftime("%Y-%m-%d %H:%M:%S.%f")  # how SQLAlchemy stores a DateTime in SQLite
            cps.append(
                dict(
                    id=cp,
                    model=model,
                    kind="text",
                    source="dir",
                    path=f"/registry/{model}/v{k}",
                    parent_id=cps[-1]["id"] if cps else None,
                    meta={},
                    first_seen_at=fin,
                )
            )
            outcome = ("pass", "pass", "pass", "warn", "block", "pass", "pass", "error")[(m + k) % 8]
            audits.append(
                dict(
                    id=audit_id,
                    checkpoint_id=cp,
                    request_key="auto",
                    policy="default",
                    priority=0,
                    device="cpu",
                    status="done",
                    outcome=outcome,
                    attempts=1,
                    cancel_requested=False,
                    created_at=fin - timedelta(minutes=20),
                    started_at=fin - timedelta(minutes=19),
                    heartbeat_at=fin,
                    finished_at=fin,
                    duration_s=300.0 + 37 * ((m * k) % 40),
                    generate_s=250.0,
                    judge_s=5.0,
                )
            )
            verdicts.append(
                dict(audit_id=audit_id, checkpoint_id=cp, outcome=outcome, policy="default", reasons=[], created_at=fin)
            )
            if outcome == "error":
                errors.append(dict(audit_id=audit_id, probe_id="policy", judge="refusal", errors=3))
            item = 0
            for probe_id, rows in plan:
                probe_runs.append(
                    dict(
                        audit_id=audit_id,
                        probe_id=probe_id,
                        status="done",
                        n_items=sum(r[2] for r in rows),
                        summary={},
                        started_at=fin,
                        finished_at=fin,
                    )
                )
                per_cat: dict[str, list[int]] = {}
                for cat, variant, n in rows:
                    for i in range(n):
                        sample_id += 1
                        item += 1
                        refused = (i + m + k) % 5 == 0
                        harmful = cat != "benign" and not refused and (i + k) % 7 == 0
                        # Plain tuples for the driver's executemany: 2M rows skip SQLAlchemy's per-row work.
                        samples.append(
                            (
                                sample_id,
                                audit_id,
                                probe_id,
                                item,
                                variant,
                                cat,
                                f"prompt {cat} {i}",
                                OUTPUT,
                                harmful,
                                refused,
                                None,
                                False,
                                fin_text,
                            )
                        )
                        scores.append(
                            (sample_id, "refusal", None, refused, None, "refusal" if refused else "", None, "[]")
                        )
                        acc = per_cat.setdefault(cat, [0, 0, 0])
                        acc[0] += 1
                        acc[1] += harmful
                        acc[2] += refused
                for cat, (n, h, r) in per_cat.items():
                    results.append(
                        dict(
                            audit_id=audit_id,
                            probe_id=probe_id,
                            category=cat,
                            n=n,
                            n_judged=n,
                            n_harmful=h,
                            n_refused=r,
                            n_judge_errors=0,
                            harmful_rate=h / n,
                            refusal_rate=r / n,
                        )
                    )
                    metric, rate = ("refusal_rate", r / n) if cat == "benign" else ("harmful_rate", h / n)
                    if (probe_id, cat) in previous:
                        base_audit, base = previous[(probe_id, cat)]
                        drift.append(
                            dict(
                                audit_id=audit_id,
                                baseline_audit_id=base_audit,
                                probe_id=probe_id,
                                category=cat,
                                metric=metric,
                                rate=rate,
                                base_rate=base,
                                delta=rate - base,
                                p_value=0.5,
                                significant=False,
                            )
                        )
                    previous[(probe_id, cat)] = (audit_id, rate)
        with engine.begin() as c:
            c.execute(text("PRAGMA synchronous=OFF"))
            for table, rows in (
                (CheckpointRow, cps),
                (AuditRun, audits),
                (ProbeRun, probe_runs),
                (CategoryResult, results),
                (CategoryDrift, drift),
                (Verdict, verdicts),
                (JudgeErrorCount, errors),
            ):
                if rows:
                    c.execute(insert(table.__table__), rows)
            c.exec_driver_sql(SAMPLE_INSERT, samples)
            c.exec_driver_sql(SCORE_INSERT, scores)
        print(
            f"\r  populated {m + 1}/{models} models, {sample_id:,} samples, {time.monotonic() - started:.0f} s",
            end="",
            file=sys.stderr,
            flush=True,
        )
    # Waiting work: re-audit requests on the newest checkpoints of the first 10 models.
    with engine.begin() as c:
        now = datetime.now(UTC)
        queued = [
            dict(
                checkpoint_id=f"sha256:{m:03d}{per_model - 1:03d}" + "0" * 58,
                request_key=f"cli:{m}",
                policy="default",
                priority=0,
                device="cpu",
                status="queued",
                attempts=0,
                cancel_requested=False,
                created_at=now - timedelta(minutes=m),
                generate_s=0.0,
                judge_s=0.0,
            )
            for m in range(min(10, models))
        ]
        c.execute(insert(AuditRun.__table__), queued)
    with engine.connect() as c:
        c.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        c.execute(text("ANALYZE"))
    engine.dispose()
    print(f"\n  done in {time.monotonic() - started:.0f} s", file=sys.stderr)


def counts(engine) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as c:
        return {
            t: c.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("checkpoints", "audit_runs", "category_results", "category_drift", "samples", "judge_scores")
        }


class _Fixed:
    """A collector that yields families collected earlier: times the text rendering alone."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def timed(fn, n: int) -> tuple[list[float], list[float]]:
    """(wall ms, cpu ms of this process) of n calls."""
    wall, cpu = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return wall, cpu


def stats(ms: list[float]) -> tuple[float, float, float]:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--db",
        type=Path,
        default=Path(tempfile.gettempdir()) / "auditd-bench-scrape.db",
        help="SQLite file, reused between runs (default: %(default)s)",
    )
    ap.add_argument("--rebuild", action="store_true", help="populate the database again")
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--checkpoints", type=int, default=10, help="checkpoints (audits) per model")
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from auditd.metrics.collector import FleetCollector, ModelResultsCollector, build_registry
    from auditd.store.db import open_db

    if args.rebuild or not args.db.exists():
        print(
            f"populating {args.db} ({args.models} models x {args.checkpoints} checkpoints x "
            f"{SAMPLES_PER_AUDIT} samples) ...",
            file=sys.stderr,
        )
        populate(args.db, args.models, args.checkpoints)
    engine = open_db(f"sqlite:///{args.db}")
    n = counts(engine)
    print("store: " + ", ".join(f"{v:,} {k}" for k, v in n.items()) + f"  ({args.db.stat().st_size / 1e6:.0f} MB)")

    # As in the daemon: live scheduler facts alongside the database's.
    registry = build_registry(engine, lambda: {"tick": time.time(), "polls": {"dir": time.time()}})
    body = generate_latest(registry)  # warm-up: connection pool, statement cache
    series = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
    rows = {"in process: fresh (generate_latest)": timed(lambda: generate_latest(registry), args.scrapes)}
    # Where the time goes: the collectors (database queries + metric families), then prometheus_client
    # turning those families into text.
    collectors = [ModelResultsCollector(engine), FleetCollector(engine)]
    families = [f for c in collectors for f in c.collect()]
    rendered = CollectorRegistry(auto_describe=False)
    rendered.register(_Fixed(families))
    rows["  of which collect (db + families)"] = timed(lambda: [list(c.collect()) for c in collectors], args.scrapes)
    rows["  of which text rendering"] = timed(lambda: generate_latest(rendered), args.scrapes)
    # What /metrics serves: the per-model part is re-rendered only after an audit or verdict changed.
    registry.render()
    rows["in process: served (render, no new audit)"] = timed(registry.render, args.scrapes)

    import httpx

    from auditd.api.app import create_app
    from auditd.api.server import HTTPServer

    server = HTTPServer(create_app(engine, registry), "127.0.0.1", 0).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            client.get("/metrics").raise_for_status()
            # CPU here is the whole process: the client and uvicorn's thread together.
            scrape = lambda: client.get("/metrics").raise_for_status()  # noqa: E731
            rows["HTTP GET /metrics (loopback)"] = timed(scrape, args.scrapes)
    finally:
        server.stop()

    print(
        f"/metrics: {series:,} series, {len(body) / 1e3:.0f} kB per scrape; {args.scrapes} scrapes each; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'':36s}{'wall median':>12s}{'p95':>9s}{'max':>9s}{'cpu median':>12s}   target < {TARGET_MS:.0f} ms")
    for label, (wall, cpu) in rows.items():
        med, p95, worst = stats(wall)
        verdict = "" if label.startswith("  ") else "meets target" if p95 < TARGET_MS else "ABOVE TARGET"
        print(f"{label:36s}{med:10.1f}ms{p95:7.1f}ms{worst:7.1f}ms{statistics.median(cpu):10.1f}ms   {verdict}")
    print("(p95 wall decides the target; on a busy machine cpu time is the better estimate of an idle one's wall)")


if __name__ == "__main__":
    main()
