"""Reading an audit back: the data behind `auditd report`, the demo's summary and the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd.runner.timings import audit_timings
from auditd.store.db import session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, ProbeRun, Verdict


class NotFound(LookupError):
    pass


def find_checkpoint(engine: Engine, ref: str, match_path: bool = True) -> CheckpointRow:
    """By id, unique id prefix (with or without "sha256:"), or registered path. The prefix is matched
    literally (LIKE wildcards in it are escaped)."""
    with session(engine) as s:
        if row := s.get(CheckpointRow, ref):
            return row
        prefix = ref if ref.startswith("sha256:") else f"sha256:{ref}"
        rows = s.exec(select(CheckpointRow).where(col(CheckpointRow.id).startswith(prefix, autoescape=True))).all()
        if not rows and match_path:
            rows = s.exec(select(CheckpointRow).where(CheckpointRow.path == ref)).all()
        if len(rows) == 1:
            return rows[0]
        raise NotFound(f"no checkpoint matches {ref!r}" if not rows else f"{ref!r} matches {len(rows)} checkpoints")


def audit_report(engine: Engine, checkpoint_id: str, audit_id: int | None = None) -> dict:
    with session(engine) as s:
        cp = s.get_one(CheckpointRow, checkpoint_id)
        q = select(AuditRun).where(AuditRun.checkpoint_id == checkpoint_id)
        audit = s.get(AuditRun, audit_id) if audit_id else s.exec(q.order_by(col(AuditRun.id).desc())).first()
        doc: dict[str, Any] = {
            "checkpoint": {
                "id": cp.id,
                "model": cp.model,
                "kind": cp.kind,
                "path": cp.path,
                "parent": cp.parent_id,
                "source": cp.source,
            },
            "audit": None,
        }
        if audit is None:
            return doc
        assert audit.id is not None  # a stored row
        verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit.id)).first()
        results = s.exec(
            select(CategoryResult)
            .where(CategoryResult.audit_id == audit.id)
            .order_by(CategoryResult.probe_id, col(CategoryResult.id))
        ).all()
        probes = s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit.id)).all()
        doc["audit"] = {
            "id": audit.id,
            "status": audit.status,
            "outcome": audit.outcome,
            "policy": audit.policy,
            "attempts": audit.attempts,
            "error": audit.error,
            "duration_s": audit.duration_s,
            "generate_s": audit.generate_s,
            "judge_s": audit.judge_s,
            "started_at": audit.started_at,
            "finished_at": audit.finished_at,
            "policy_digest": audit.policy_digest,
            "reuse": audit.reuse or {},
            "timings": audit_timings(s, audit),  # load, generate, judge, tokens/s, early stops
        }
        doc["verdict"] = (
            {"outcome": verdict.outcome, "reasons": verdict.reasons, "policy_digest": verdict.policy_digest}
            if verdict
            else None
        )
        doc["verdict_changes"] = verdict_changes(s, audit.id)
        doc["categories"] = [
            {
                "probe": r.probe_id,
                "category": r.category,
                "n": r.n,
                "judged": r.n_judged,
                "harmful": r.n_harmful,
                "refused": r.n_refused,
                "judge_errors": r.n_judge_errors,
                "harmful_rate": r.harmful_rate,
                "refusal_rate": r.refusal_rate,
                "degenerate": r.n_degenerate,
                "degenerate_rate": r.degenerate_rate,
            }
            for r in results
        ]
        doc["probes"] = [
            {"probe": p.probe_id, "status": p.status, "items": p.n_items, "summary": p.summary} for p in probes
        ]
        doc["attack_curves"] = attack_curves(s, audit.id)  # GRPO evaluation points, by probe
    return doc


def attack_curves(s, audit_id: int) -> dict[str, list[dict]]:
    """The stored evaluation points of an audit's attack probes: probe id -> points by step."""
    from auditd.store.attack_models import AttackPoint

    curves: dict[str, list[dict]] = {}
    for p in s.exec(
        select(AttackPoint)
        .where(AttackPoint.audit_id == audit_id)
        .order_by(AttackPoint.probe_id, col(AttackPoint.step))
    ):
        curves.setdefault(p.probe_id, []).append(
            {
                "step": p.step,
                "wall_s": p.wall_s,
                "mean_reward": p.mean_reward,
                "harmful_rate": p.harmful_rate,
                "per_category": p.per_category,
                "over_refusal_rate": p.over_refusal_rate,
                "capability_retention": p.capability_retention,
            }
        )
    return curves


def verdict_changes(s, audit_id: int) -> list[dict]:
    """The audit's verdict decided again under newer policy versions, oldest first."""
    from auditd.store.version_models import VerdictChange

    return [
        {
            "old": c.old_outcome,
            "new": c.new_outcome,
            "old_policy_digest": c.old_policy_digest,
            "new_policy_digest": c.new_policy_digest,
            "reason": c.reason,
            "at": c.at,
        }
        for c in s.exec(select(VerdictChange).where(VerdictChange.audit_id == audit_id).order_by(col(VerdictChange.id)))
    ]
