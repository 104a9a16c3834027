"""Re-deciding a finished audit under a new version of its policy, from stored results only.

When only the decision part of a policy changed (thresholds, per-category limits, rule actions,
baseline choice; see auditd.policy.versions), nothing needs generating or judging again: the
stored category results, drift against the baseline and probe summaries are decided again in
milliseconds, no model is loaded. The verdict row is updated in place, the change is recorded in
`verdict_changes` (old -> new outcome, old/new policy digest, reason). Storing it, re-thresholding
attack summaries and the registry write-back are the caller's (auditd/runner/verdicts.py); /metrics
follows from the stored rows.
"""

from __future__ import annotations

from sqlmodel import Session

from auditd.policy.baseline import evaluate
from auditd.policy.model import Policy
from auditd.policy.versions import version_of
from auditd.store.models import AuditRun, CheckpointRow, Verdict, utcnow
from auditd.store.version_models import VerdictChange


def redecide(
    s: Session,
    policy: Policy,
    audit: AuditRun,
    verdict: Verdict,
    checkpoint: CheckpointRow,
    summaries: dict,
    reason: str,
) -> VerdictChange:
    """Decide a finished audit again under `policy` from its stored results and `summaries` (probe id
    -> summary, attack figures already re-thresholded under `policy`): the verdict and audit rows
    take the new decision and a `VerdictChange` is added, all in the caller's session. The caller
    commits and writes back (auditd.runner.verdicts.redecide_audit)."""
    assert audit.id is not None
    version = version_of(policy)
    decision = evaluate(s, policy, audit.id, checkpoint, summaries)
    change = VerdictChange(
        audit_id=audit.id,
        checkpoint_id=audit.checkpoint_id,
        old_outcome=verdict.outcome,
        new_outcome=decision.outcome,
        new_policy_digest=version.digest,
        reason=reason,
        old_policy_digest=verdict.policy_digest or audit.policy_digest,
    )
    verdict.outcome, verdict.reasons, verdict.created_at = decision.outcome, decision.reasons, utcnow()
    verdict.policy, verdict.policy_digest = policy.name, version.digest
    audit.outcome, audit.policy_digest, audit.decision_digest = decision.outcome, version.digest, version.decision
    s.add(change)
    s.add(verdict)
    s.add(audit)
    return change
