"""Which finished audit a checkpoint is compared with, and verdicts that follow from it.

The baseline is the registry lineage's parent, else the model's pinned baseline
(`models.baseline_checkpoint_id`), in the order the policy prefers. A parent named by lineage that
was found in the same poll as its child may not have been resolved to an id yet; it is looked up
again here by its registry location. A child decided before its parent's audit finished gets a
`baseline_missing` reason; when that audit finishes, such verdicts are decided again
(`redecide_dependents`) and written back, so the order audits run in cannot let drift slip by.
"""

from __future__ import annotations

import logging
import os

from sqlalchemy import delete
from sqlmodel import Session, select

from auditd.policy.judge_trust import apply_judge_trust
from auditd.policy.model import Policy
from auditd.policy.verdict import Baseline, Decision, decide
from auditd.runner.results import latest_results
from auditd.store.hook_models import CategoryDrift
from auditd.store.models import AuditRun, CheckpointRow, ModelRow, ProbeRun, RegistryEntry, Verdict, utcnow

log = logging.getLogger(__name__)

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
    entry = s.exec(select(RegistryEntry).where(RegistryEntry.source == checkpoint.source,
                                               RegistryEntry.location == rel)).first()
    return (entry.checkpoint_id if entry else None), named


def latest_done_audit(s: Session, checkpoint_id: str) -> AuditRun | None:
    return s.exec(select(AuditRun).where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.status == "done")
                  .order_by(AuditRun.finished_at.desc(), AuditRun.id.desc())).first()


def has_pending_audit(s: Session, checkpoint_id: str | None) -> bool:
    if not checkpoint_id:
        return False
    return s.exec(select(AuditRun.id).where(AuditRun.checkpoint_id == checkpoint_id,
                                            AuditRun.status.in_(PENDING))).first() is not None


def resolve_baseline(s: Session, policy: Policy, checkpoint: CheckpointRow) -> Baseline:
    if policy.baseline.prefer == "none":
        return Baseline(status="none", why="policy: no baseline comparison")
    parent_id, named = lineage_parent(s, checkpoint)
    model = s.get(ModelRow, checkpoint.model)
    pinned = model.baseline_checkpoint_id if model else None
    order = [("parent", parent_id, named), ("pinned", pinned, pinned)]
    if policy.baseline.prefer == "pinned":
        order.reverse()
    missing = []
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
        return Baseline(status="ok", checkpoint_id=cid, audit_id=audit.id, results=latest_results(s, audit.id),
                        summaries=summaries, why=how)
    if missing:
        return Baseline(status="missing", checkpoint_id=missing[0][0], why="; ".join(m for _, m in missing))
    return Baseline(status="none", why="no parent or pinned baseline")


def evaluate(s: Session, policy: Policy, audit_id: int, checkpoint: CheckpointRow, summaries: dict) -> Decision:
    """Decide an audit against its baseline and store its per-category drift (the caller commits)."""
    baseline = resolve_baseline(s, policy, checkpoint)
    decision = decide(policy, latest_results(s, audit_id), summaries, baseline=baseline)
    apply_judge_trust(s, policy, checkpoint.kind, audit_id, decision)
    s.exec(delete(CategoryDrift).where(CategoryDrift.audit_id == audit_id))
    if baseline.audit_id is not None:
        for row in decision.drift:
            s.add(CategoryDrift(audit_id=audit_id, **row))
    return decision


def is_pending(s: Session, verdict: Verdict) -> bool:
    """A verdict still waiting for its baseline's audit: not final (the gate keeps waiting)."""
    return any(r.get("rule") == "baseline_missing" and has_pending_audit(s, r.get("baseline"))
               for r in verdict.reasons or [])


def redecide_dependents(ctx, finished_checkpoint_id: str, scan: int = 200) -> list[int]:
    """Decide again the recent verdicts that lacked a baseline which now has a finished audit.
    Bounded to the latest `scan` verdicts so it stays cheap after every audit."""
    from auditd.runner.audit import write_back
    from auditd.store.db import session

    redone = []
    try:
        with session(ctx.engine) as s:
            verdicts = s.exec(select(Verdict).order_by(Verdict.id.desc()).limit(scan)).all()
            waiting = [v for v in verdicts if any(r.get("rule") == "baseline_missing" for r in v.reasons or [])]
    except Exception:  # never let this follow-up break the audit that just finished
        log.exception("looking for verdicts waiting on %s failed", finished_checkpoint_id)
        return redone
    for v in waiting:
        try:
            with session(ctx.engine) as s:
                audit = s.get(AuditRun, v.audit_id)
                checkpoint = s.get(CheckpointRow, v.checkpoint_id)
                if audit is None or audit.status != "done" or checkpoint is None:
                    continue
                policy = ctx.policies.get(audit.policy)
                if resolve_baseline(s, policy, checkpoint).checkpoint_id != finished_checkpoint_id:
                    continue
                summaries = {p.probe_id: p.summary or {} for p in
                             s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id))}
                decision = evaluate(s, policy, audit.id, checkpoint, summaries)
                row = s.get(Verdict, v.id)
                row.outcome, row.reasons, row.created_at = decision.outcome, decision.reasons, utcnow()
                row.written_back_at = None  # the registry holds the old decision until written
                audit.outcome = decision.outcome
                s.add(row)
                s.add(audit)
                s.commit()
            log.info("verdict of audit %s decided again against %s: %s", audit.id, finished_checkpoint_id[:19],
                     decision.outcome)
            redone.append(audit.id)
            write_back(ctx, checkpoint, row)
        except Exception:  # one bad old verdict must not stop the others, nor the audit that finished
            log.exception("deciding verdict %s again failed", v.id)
    return redone
