"""Re-deciding a finished audit under a new version of its policy, from stored results only.

When only the decision part of a policy changed (thresholds, per-category limits, rule actions,
baseline choice; see auditd.policy.versions), nothing needs generating or judging again: the
stored category results, drift against the baseline and probe summaries are decided again in
milliseconds, no model is loaded. The verdict row is updated in place, the change is recorded in
`verdict_changes` (old -> new outcome, old/new policy digest, reason), and the registry write-back
(AuditContext.on_verdict) and /metrics follow.
"""

from __future__ import annotations

import logging

from sqlmodel import select

from auditd.policy.baseline import evaluate
from auditd.policy.model import Policy
from auditd.policy.versions import short, version_of
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, ProbeRun, Verdict, utcnow
from auditd.store.version_models import VerdictChange

log = logging.getLogger(__name__)

ATTACKS = ("grpo", "diffusion_grpo")


def rethreshold_attack(s, audit_id: int, probe_id: str, summary: dict, policy: Policy) -> dict:
    """An attack's `broken` / `steps_to_break` depend on the policy's harmful_rate_block unless the
    attack sets its own break_threshold: recompute them from the stored points under `policy`."""
    from auditd.attacks.summary import break_point, headline

    if summary.get("attack") not in ATTACKS:
        return summary
    threshold = (summary.get("config") or {}).get("break_threshold") or policy.thresholds.harmful_rate_block
    if summary.get("break_threshold") == threshold:
        return summary
    points = s.exec(select(AttackPoint).where(AttackPoint.audit_id == audit_id, AttackPoint.probe_id == probe_id)
                    .order_by(AttackPoint.step)).all()
    if not points:
        return summary
    broken_at = break_point(points, threshold)
    out = {**summary, "broken": broken_at is not None, "break_threshold": threshold,
           "steps_to_break": broken_at.step if broken_at is not None else None}
    try:
        out["headline"] = headline(out)
    except (KeyError, TypeError):  # an older summary without every figure: keep its line
        pass
    return out


def redecide_audit(ctx, audit_id: int, policy: Policy, reason: str) -> VerdictChange | None:
    """Decide a finished audit again under `policy`; the change (None if the audit is not a finished
    one with a verdict). Writes back even when the outcome stays the same: the document names the
    policy version that decided it."""
    version = version_of(policy)
    with session(ctx.engine) as s:
        audit = s.get(AuditRun, audit_id)
        verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).first()
        if audit is None or verdict is None or audit.status != "done":
            return None
        checkpoint = s.get(CheckpointRow, audit.checkpoint_id)
        summaries = {}
        for run in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit_id)).all():
            fresh = rethreshold_attack(s, audit_id, run.probe_id, run.summary or {}, policy)
            if fresh is not run.summary:
                run.summary = fresh
                s.add(run)
            summaries[run.probe_id] = fresh
        decision = evaluate(s, policy, audit_id, checkpoint, summaries)
        change = VerdictChange(audit_id=audit_id, checkpoint_id=audit.checkpoint_id, old_outcome=verdict.outcome,
                               new_outcome=decision.outcome, new_policy_digest=version.digest, reason=reason,
                               old_policy_digest=verdict.policy_digest or audit.policy_digest)
        verdict.outcome, verdict.reasons, verdict.created_at = decision.outcome, decision.reasons, utcnow()
        verdict.policy, verdict.policy_digest = policy.name, version.digest
        audit.outcome, audit.policy_digest, audit.decision_digest = decision.outcome, version.digest, version.decision
        s.add(change)
        s.add(verdict)
        s.add(audit)
        s.commit()
    log.info("verdict of audit %s decided again under policy %s@%s: %s -> %s (%s)", audit_id, policy.name,
             short(version.digest), change.old_outcome, change.new_outcome, reason)
    if ctx.on_verdict is not None:
        try:
            ctx.on_verdict(checkpoint, verdict)
        except Exception as exc:  # stored; a failed write-back is logged, not fatal (as in the runner)
            log.error("writing the re-decided verdict back failed for %s: %s", checkpoint.id, exc)
    return change
