"""Which finished audit a checkpoint is compared with, and verdicts that follow from it.

The baseline is the registry lineage's parent, else the model's pinned baseline
(`models.baseline_checkpoint_id`), in the order the policy prefers. A parent named by lineage that
was found in the same poll as its child may not have been resolved to an id yet; it is looked up
again here by its registry location. A child decided before its parent's audit finished gets a
`baseline_missing` reason; when that audit finishes, such verdicts are decided again
(`redecide_waiting`; stored and written back by auditd/runner/verdicts.py), so the order audits
run in cannot let drift slip by.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy import delete
from sqlmodel import Session, col, select

from auditd.policy.judge_trust import apply_judge_trust
from auditd.policy.model import Policy
from auditd.policy.verdict import Baseline, Decision, decide
from auditd.store.drift_models import CategoryDrift
from auditd.store.models import AuditRun, CheckpointRow, ModelRow, ProbeRun, RegistryEntry, Verdict, utcnow
from auditd.store.results import latest_results

PENDING = ("queued", "running")


def lineage_parent(s: Session, checkpoint: CheckpointRow) -> tuple[str | None, str | None]:
    """(parent checkpoint id or None, what lineage named), resolving a relative location late."""
    if checkpoint.parent_id:
        return checkpoint.parent_id, checkpoint.parent_id
    lineage = (checkpoint.meta or {}).get("lineage") or {}
    named = lineage.get("parent") or lineage.get("baseline")
    if not isinstance(named, str) or not named:
        return None, None
    if named.startswith("sha256:"):
        return named, named
    location = (checkpoint.meta or {}).get("location")
    rel = os.path.normpath(os.path.join(location, named)) if location and named.startswith(".") else named
    entry = s.exec(
        select(RegistryEntry).where(RegistryEntry.source == checkpoint.source, RegistryEntry.location == rel)
    ).first()
    return (entry.checkpoint_id if entry else None), named


def latest_done_audit(s: Session, checkpoint_id: str) -> AuditRun | None:
    return s.exec(
        select(AuditRun)
        .where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.status == "done")
        .order_by(col(AuditRun.finished_at).desc(), col(AuditRun.id).desc())
    ).first()


def has_pending_audit(s: Session, checkpoint_id: str | None) -> bool:
    if not checkpoint_id:
        return False
    return (
        s.exec(
            select(AuditRun.id).where(AuditRun.checkpoint_id == checkpoint_id, col(AuditRun.status).in_(PENDING))
        ).first()
        is not None
    )


def resolve_baseline(s: Session, policy: Policy, checkpoint: CheckpointRow) -> Baseline:
    if policy.baseline.prefer == "none":
        return Baseline(status="none", why="policy: no baseline comparison")
    parent_id, named = lineage_parent(s, checkpoint)
    model = s.get(ModelRow, checkpoint.model)
    pinned = model.baseline_checkpoint_id if model else None
    order = [("parent", parent_id, named), ("pinned", pinned, pinned)]
    if policy.baseline.prefer == "pinned":
        order.reverse()
    missing: list[tuple[str | None, str]] = []
    for how, cid, name in order:
        if not name or cid == checkpoint.id:
            continue
        if cid is None:
            missing.append((None, f"{how} {name!r} is not a known checkpoint"))
            continue
        audit = latest_done_audit(s, cid)
        if audit is None:
            state = "its audit has not finished" if has_pending_audit(s, cid) else "it has no finished audit"
            missing.append((cid, f"{how} {cid[:19]} ({state})"))
            continue
        summaries = {p.probe_id: p.summary or {} for p in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id))}
        return Baseline(
            status="ok",
            checkpoint_id=cid,
            audit_id=audit.id,
            results=latest_results(s, audit.id),
            summaries=summaries,
            why=how,
        )
    if missing:
        return Baseline(status="missing", checkpoint_id=missing[0][0], why="; ".join(m for _, m in missing))
    return Baseline(status="none", why="no parent or pinned baseline")


def evaluate(s: Session, policy: Policy, audit_id: int, checkpoint: CheckpointRow, summaries: dict) -> Decision:
    """Decide an audit against its baseline and store its per-category drift (the caller commits)."""
    baseline = resolve_baseline(s, policy, checkpoint)
    decision = decide(policy, latest_results(s, audit_id), summaries, baseline=baseline)
    apply_judge_trust(s, policy, checkpoint.kind, audit_id, decision)
    s.exec(delete(CategoryDrift).where(col(CategoryDrift.audit_id) == audit_id))
    if baseline.audit_id is not None:
        for row in decision.drift:
            s.add(CategoryDrift(audit_id=audit_id, **row))
    return decision


def is_pending(s: Session, verdict: Verdict) -> bool:
    """A verdict still waiting for its baseline's audit: not final (the gate keeps waiting)."""
    return any(
        r.get("rule") == "baseline_missing" and has_pending_audit(s, r.get("baseline")) for r in verdict.reasons or []
    )


def waiting_for_baseline(s: Session, scan: int = 200) -> list[Verdict]:
    """The latest `scan` verdicts decided without their baseline (rule `baseline_missing`)."""
    verdicts = s.exec(select(Verdict).order_by(col(Verdict.id).desc()).limit(scan)).all()
    return [v for v in verdicts if any(r.get("rule") == "baseline_missing" for r in v.reasons or [])]


def redecide_waiting(
    s: Session, policy_of: Callable[[str], Policy], verdict: Verdict, finished_checkpoint_id: str
) -> tuple[CheckpointRow, Verdict] | None:
    """Decide again a verdict that waited for a baseline, if that baseline is the checkpoint whose
    audit just finished: (checkpoint, updated verdict row), changed in the caller's session (the
    caller commits and writes back), or None when it does not depend on it."""
    audit = s.get(AuditRun, verdict.audit_id)
    checkpoint = s.get(CheckpointRow, verdict.checkpoint_id)
    if audit is None or audit.id is None or audit.status != "done" or checkpoint is None:
        return None
    policy = policy_of(audit.policy)
    if resolve_baseline(s, policy, checkpoint).checkpoint_id != finished_checkpoint_id:
        return None
    summaries = {p.probe_id: p.summary or {} for p in s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id))}
    decision = evaluate(s, policy, audit.id, checkpoint, summaries)
    row = s.get(Verdict, verdict.id)
    if row is None:
        return None
    row.outcome, row.reasons, row.created_at = decision.outcome, decision.reasons, utcnow()
    row.written_back_at = None  # the registry holds the old decision until written
    audit.outcome = decision.outcome
    s.add(row)
    s.add(audit)
    return checkpoint, row
