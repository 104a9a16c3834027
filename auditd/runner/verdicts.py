"""After a verdict: writing it back to the registry, and deciding again the verdicts that depend on it.

Policy code computes decisions (auditd.policy.baseline, auditd.policy.redecide) and leaves the
transaction to its caller; this module stores them and hands them to the registry write-back
(AuditContext.on_verdict, wired by the daemon). The runner calls it when an audit ends (so an
`auditd audit` run re-decides too), the scheduler when it gives an audit up or a policy changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from auditd.logs import one_line
from auditd.policy.baseline import redecide_waiting, waiting_for_baseline
from auditd.policy.cache import PolicyCache
from auditd.policy.model import Policy
from auditd.policy.redecide import redecide
from auditd.policy.versions import short
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, ProbeRun, Verdict, utcnow
from auditd.store.version_models import VerdictChange

log = logging.getLogger(__name__)

ATTACKS = ("grpo", "diffusion_grpo")


class VerdictContext(Protocol):
    """What storing and writing back a verdict needs of an audit context (auditd.runner.audit.AuditContext)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def on_verdict(self) -> Callable[[CheckpointRow, Verdict], None] | None: ...

    @property
    def policies(self) -> PolicyCache: ...


def write_back(ctx: VerdictContext, checkpoint: CheckpointRow, verdict: Verdict) -> None:
    """Hand the verdict to the registry and mark it written. Without a writer (an audit child) the
    verdict stays marked pending and the daemon writes it (flush_write_backs): a crash between the
    stored verdict and its write-back is caught up on the next start."""
    if ctx.on_verdict is None:
        return
    try:
        ctx.on_verdict(checkpoint, verdict)
    except Exception as exc:  # the verdict is stored; a failed write-back is logged and retried later
        log.error("writing verdict back to the registry failed for %s: %s", checkpoint.id, one_line(exc))
        return
    try:
        with session(ctx.engine) as s:
            s.exec(update(Verdict).where(col(Verdict.id) == verdict.id).values(written_back_at=utcnow()))
            s.commit()
    except Exception as exc:  # written, but not marked: it is written again later (same content)
        log.warning("marking the verdict of %s written back failed: %s", checkpoint.id, one_line(exc))


def flush_write_backs(ctx: VerdictContext, limit: int = 50, max_age_s: float = 86400.0) -> int:
    """Write back the verdicts still pending (decided in an audit child, re-decided, given up, or
    left by a crash or a failed write); those older than `max_age_s` are left alone. Returns how
    many were written."""
    if ctx.on_verdict is None:
        return 0
    since = utcnow() - timedelta(seconds=max_age_s)
    with session(ctx.engine) as s:
        pending = s.exec(
            select(Verdict, CheckpointRow)
            .join(CheckpointRow, col(CheckpointRow.id) == Verdict.checkpoint_id)
            .where(col(Verdict.written_back_at).is_(None), Verdict.created_at >= since)
            .order_by(col(Verdict.id))
            .limit(limit)
        ).all()
    for verdict, checkpoint in pending:
        write_back(ctx, checkpoint, verdict)
    return len(pending)


def redecide_dependents(ctx: VerdictContext, finished_checkpoint_id: str, scan: int = 200) -> list[int]:
    """Decide again the recent verdicts that lacked a baseline which now has a finished audit, and
    write them back. Bounded to the latest `scan` verdicts so it stays cheap after every audit."""
    redone: list[int] = []
    try:
        with session(ctx.engine) as s:
            waiting = waiting_for_baseline(s, scan)
    except Exception:  # never let this follow-up break the audit that just finished
        log.exception("looking for verdicts waiting on %s failed", finished_checkpoint_id)
        return redone
    for v in waiting:
        try:
            with session(ctx.engine) as s:
                redone_here = redecide_waiting(s, ctx.policies.get, v, finished_checkpoint_id)
                if redone_here is None:
                    continue
                s.commit()
            checkpoint, verdict = redone_here
            log.info(
                "verdict of audit %s decided again against %s: %s",
                verdict.audit_id,
                finished_checkpoint_id[:19],
                verdict.outcome,
            )
            redone.append(verdict.audit_id)
            write_back(ctx, checkpoint, verdict)
        except Exception:  # one bad old verdict must not stop the others, nor the audit that finished
            log.exception("deciding verdict %s again failed", v.id)
    return redone


def rethreshold_attack(s: Session, audit_id: int, probe_id: str, summary: dict, policy: Policy) -> dict:
    """An attack's `broken` / `steps_to_break` depend on the policy's harmful_rate_block unless the
    attack sets its own break_threshold: recompute them from the stored points under `policy`."""
    from auditd.attacks.summary import break_point, headline

    if summary.get("attack") not in ATTACKS:
        return summary
    threshold = (summary.get("config") or {}).get("break_threshold") or policy.thresholds.harmful_rate_block
    if summary.get("break_threshold") == threshold:
        return summary
    points = s.exec(
        select(AttackPoint)
        .where(AttackPoint.audit_id == audit_id, AttackPoint.probe_id == probe_id)
        .order_by(col(AttackPoint.step))
    ).all()
    if not points:
        return summary
    broken_at = break_point(points, threshold)
    out = {
        **summary,
        "broken": broken_at is not None,
        "break_threshold": threshold,
        "steps_to_break": broken_at.step if broken_at is not None else None,
    }
    try:
        out["headline"] = headline(out)
    except (KeyError, TypeError):  # an older summary without every figure: keep its line
        pass
    return out


def redecide_audit(ctx: VerdictContext, audit_id: int, policy: Policy, reason: str) -> VerdictChange | None:
    """Decide a finished audit again under `policy` (auditd.policy.redecide) and store the change;
    None if the audit is not a finished one with a verdict. Writes back even when the outcome stays
    the same: the document names the policy version that decided it."""
    with session(ctx.engine) as s:
        audit = s.get(AuditRun, audit_id)
        verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).first()
        if audit is None or verdict is None or audit.status != "done":
            return None
        checkpoint = s.get(CheckpointRow, audit.checkpoint_id)
        if checkpoint is None:
            return None
        summaries = {}
        for run in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit_id)).all():
            fresh = rethreshold_attack(s, audit_id, run.probe_id, run.summary or {}, policy)
            if fresh is not run.summary:
                run.summary = fresh
                s.add(run)
            summaries[run.probe_id] = fresh
        change = redecide(s, policy, audit, verdict, checkpoint, summaries, reason)
        s.commit()
    log.info(
        "verdict of audit %s decided again under policy %s@%s: %s -> %s (%s)",
        audit_id,
        policy.name,
        short(change.new_policy_digest),
        change.old_outcome,
        change.new_outcome,
        reason,
    )
    if ctx.on_verdict is not None:
        try:
            ctx.on_verdict(checkpoint, verdict)
        except Exception as exc:  # stored; a failed write-back is logged, not fatal (as in the runner)
            log.error("writing the re-decided verdict back failed for %s: %s", checkpoint.id, exc)
    return change
