"""Where an audit's time went, for users: model load, generation, judging, tokens, early stops.

Seconds in generate and judge accumulate on the audit row as batches are stored; tokens and early
stops are counted from the samples this audit generated (copied samples have no token count), so
a resumed audit reports the work of all its attempts.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select

from auditd.store.db import session
from auditd.store.models import AuditRun, Sample


def record_audit_timings(runner, **values) -> None:
    """Merge `values` (load_s, batch_size, ...) into the audit's timings; load seconds add up over
    resumed attempts."""

    def write():
        with session(runner.ctx.engine) as s:
            audit = s.get(AuditRun, runner.audit_id)
            timings = dict(audit.timings or {})
            for k, v in values.items():
                timings[k] = round(timings.get(k, 0.0) + v, 3) if k.endswith("_s") else v
            audit.timings = timings
            s.add(audit)
            s.commit()

    runner._storing(write, "store timings")


def audit_timings(s, audit: AuditRun) -> dict:
    """The timings block of an audit's report."""
    generated, tokens, stopped = s.exec(
        select(
            func.count(col(Sample.new_tokens)),
            func.coalesce(func.sum(col(Sample.new_tokens)), 0),
            func.count(col(Sample.id)).filter(col(Sample.early_stop).is_(True)),
        ).where(Sample.audit_id == audit.id)
    ).one()
    recorded = dict(audit.timings or {})
    generate_s = audit.generate_s or 0.0
    return {
        "load_s": recorded.get("load_s"),
        "generate_s": round(generate_s, 3),
        "judge_s": round(audit.judge_s or 0.0, 3),
        "tokens": int(tokens),
        "tokens_per_s": round(tokens / generate_s, 1) if generate_s > 0 and tokens else None,
        "items_generated": int(generated),
        "early_stopped": int(stopped),
        "early_stopped_share": round(stopped / generated, 4) if generated else None,
        "batch_size": recorded.get("batch_size"),
        "batch_size_from": recorded.get("batch_size_from"),
    }


def timing_line(t: dict) -> str:
    """One line for `auditd report`: "load 20.1 s, generate 95.3 s, judge 0.4 s; 21,004 tokens at ..."."""
    parts = [
        f"load {t['load_s']:.1f} s" if t.get("load_s") is not None else None,
        f"generate {t['generate_s']:.1f} s",
        f"judge {t['judge_s']:.1f} s",
    ]
    line = ", ".join(p for p in parts if p)
    if t.get("tokens"):
        line += f"; {t['tokens']:,} tokens at {t['tokens_per_s'] or 0:.1f} tokens/s"
    if t.get("items_generated"):
        line += f"; {t['early_stopped']}/{t['items_generated']} answers stopped early ({t['early_stopped_share']:.0%})"
    if t.get("batch_size"):
        line += f"; batch {t['batch_size']} ({t['batch_size_from']})"
    return line
