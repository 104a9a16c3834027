"""When a policy changes, the verdicts it governs follow: on daemon start, after every successful
SIGHUP reload, and every minute for what a rate limit deferred.

Which policy governs a checkpoint: the policy its latest audit was explicitly asked for under
(`auditd audit --policy`, POST /v1/audits), else the daemon's configured policy (checkpoints its
registry sources and webhooks found). A verdict is stale when it was decided under another version
(auditd.policy.versions) of that policy:
- decision part changed only: re-decided from stored results at once, no model loaded
  (auditd.policy.redecide, stored and written back by auditd.runner.verdicts);
- plan part changed: a re-audit is queued, which reuses every stored sample still valid
  (auditd.runner.reuse). Re-audits run below new checkpoints (priority REAUDIT_PRIORITY) and at
  most `reaudit_max_per_hour` are queued per hour; the queue key names the plan version, so a
  second pass, a second SIGHUP or a duplicate event cannot queue the same re-audit twice.
`reaudit_on_policy_change`: none (only `auditd status` shows stale verdicts), latest (the latest
checkpoint of each model, the default) or all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, update
from sqlmodel import col, select

from auditd.policy.load import PolicyError
from auditd.policy.versions import change_kind, request_key, short, version_of
from auditd.runner.verdicts import redecide_audit
from auditd.scheduler import queue
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, utcnow

log = logging.getLogger(__name__)

REAUDIT_PRIORITY = -10  # below new checkpoints (0) and command-line audits (10)
PASS_INTERVAL_S = 60
_WATCHED: dict[str, object] = {}
_UNLOADABLE: set[str] = set()  # scheduler key -> daemon (APScheduler persists jobs by reference)


@dataclass
class Stale:
    checkpoint_id: str
    model: str
    audit_id: int
    policy_ref: str  # how the governing policy is named (a name in policies_dir or a path)
    policy_name: str
    change: str  # "decision" | "plan"
    old_digest: str | None
    new_digest: str
    latest: bool  # the latest checkpoint of its model


EXPLICIT = ("cli:", "api:")  # audits someone asked for under a named policy


def governing_policy(audit: AuditRun, default_ref: str) -> str:
    """An audit someone asked for under a policy stays governed by that policy; audits the daemon
    started itself (registry polls, webhooks, re-audits) by the daemon's policy."""
    return audit.policy if audit.request_key.startswith(EXPLICIT) else default_ref


def stale_verdicts(engine, policies, default_ref: str, scope: str = "all") -> list[Stale]:
    """Checkpoints whose latest finished audit was decided under another version of their policy;
    scope "latest" keeps the latest checkpoint of each model only."""
    with session(engine) as s:
        newest = dict(
            s.exec(
                select(CheckpointRow.model, func.max(CheckpointRow.first_seen_at)).group_by(CheckpointRow.model)
            ).all()
        )
        rows = s.exec(
            select(AuditRun, CheckpointRow)
            .join(CheckpointRow, col(CheckpointRow.id) == col(AuditRun.checkpoint_id))
            .where(col(AuditRun.status) == "done")
            .order_by(col(AuditRun.finished_at), col(AuditRun.id))
        ).all()
    latest: dict[str, tuple[AuditRun, CheckpointRow]] = {}
    for audit, cp in rows:
        latest[cp.id] = (audit, cp)  # ordered by finish: the last one wins
    out: list[Stale] = []
    for audit, cp in latest.values():
        is_latest = cp.first_seen_at == newest.get(cp.model)
        if scope == "latest" and not is_latest:
            continue
        ref = governing_policy(audit, default_ref)
        try:
            policy = policies.get(ref)
        except PolicyError as exc:
            if ref not in _UNLOADABLE:  # once per policy, not every pass
                _UNLOADABLE.add(ref)
                log.warning("policy %r does not load; verdicts it governs are left as they are: %s", ref, exc)
            continue
        version = version_of(policy)
        kind = change_kind(audit.plan_digest, audit.decision_digest, version)
        if kind != "same" and audit.id is not None:
            out.append(
                Stale(cp.id, cp.model, audit.id, ref, policy.name, kind, audit.policy_digest, version.digest, is_latest)
            )
    return out


def apply_policy_changes(ctx, default_ref: str, mode: str, max_per_hour: int, device: str = "any") -> dict[str, int]:
    """Re-decide or queue re-audits of the stale verdicts in `mode`'s scope; counts by what happened."""
    counts = {"redecided": 0, "queued": 0, "waiting": 0, "deferred": 0, "skipped": 0}
    if mode == "none":
        return counts
    budget = max_per_hour - _queued_last_hour(ctx.engine)
    for st in stale_verdicts(ctx.engine, ctx.policies, default_ref, scope=mode):
        policy = ctx.policies.get(st.policy_ref)
        if st.change == "decision":
            reason = f"policy {policy.name}: decision settings changed"
            if redecide_audit(ctx, st.audit_id, policy, reason) is not None:
                counts["redecided"] += 1
            continue
        with session(ctx.engine) as s:
            cp = s.get_one(CheckpointRow, st.checkpoint_id)
        if not policy.plan(cp.kind):
            counts["skipped"] += 1
            continue
        key = request_key(st.policy_ref, version_of(policy))
        if _exists(ctx.engine, cp.id, key):
            counts["waiting"] += 1  # queued, running or already ended under this plan version
            continue
        if not Path(cp.path).exists():
            log.warning(
                "checkpoint %s (%s): decided under an older policy, but its files are gone; not re-audited",
                cp.id[:19],
                cp.model,
            )
            counts["skipped"] += 1
            continue
        if budget <= 0:
            counts["deferred"] += 1
            continue
        run, created = queue.enqueue(
            ctx.engine, cp.id, request_key=key, policy=st.policy_ref, priority=REAUDIT_PRIORITY, device=device
        )
        if created and run.id is not None:
            budget -= 1
            counts["queued"] += 1
            _supersede(ctx.engine, cp.id, run.id)
            log.info(
                "re-audit %s queued for %s (%s): policy %s plan changed (%s -> %s)",
                run.id,
                cp.id[:19],
                cp.model,
                policy.name,
                short(st.old_digest) or "unversioned",
                short(st.new_digest),
            )
    if any(counts.values()):
        log.info("policy changes applied (%s): %s", mode, ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return counts


def audit_under(ctx, checkpoint_id: str, policy_ref: str, priority: int = 10, device: str = "any"):
    """Make one checkpoint's verdict follow `policy_ref` now, whatever `reaudit_on_policy_change`
    says (e.g. `auditd demo --grpo` after `auditd demo`): (the audit to wait for, what was done:
    "current", "redecided", "queued" or "waiting")."""
    policy = ctx.policies.get(policy_ref)
    version = version_of(policy)
    with session(ctx.engine) as s:
        done = s.exec(
            select(AuditRun)
            .where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.status == "done")
            .order_by(col(AuditRun.finished_at).desc(), col(AuditRun.id).desc())
        ).first()
    if done is not None:
        kind = change_kind(done.plan_digest, done.decision_digest, version)
        if kind == "same":
            return done, "current"
        if kind == "decision" and done.id is not None:
            redecide_audit(ctx, done.id, policy, f"policy {policy.name}: decision settings changed")
            return done, "redecided"
    run, created = queue.enqueue(
        ctx.engine,
        checkpoint_id,
        request_key=request_key(policy_ref, version),
        policy=policy_ref,
        priority=priority,
        device=device,
    )
    return run, "queued" if created else "waiting"


def _exists(engine, checkpoint_id: str, key: str) -> bool:
    with session(engine) as s:
        return (
            s.exec(
                select(AuditRun.id).where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.request_key == key)
            ).first()
            is not None
        )


def _queued_last_hour(engine) -> int:
    since = utcnow() - timedelta(hours=1)
    with session(engine) as s:
        return s.exec(
            select(func.count(col(AuditRun.id))).where(
                col(AuditRun.priority) == REAUDIT_PRIORITY, AuditRun.created_at >= since
            )
        ).one()


def _supersede(engine, checkpoint_id: str, keep: int) -> None:
    """A re-audit for an older plan version that never started is not needed any more."""
    with session(engine) as s:
        s.exec(
            update(AuditRun)
            .where(
                col(AuditRun.checkpoint_id) == checkpoint_id,
                col(AuditRun.id) != keep,
                col(AuditRun.priority) == REAUDIT_PRIORITY,
                col(AuditRun.status) == "queued",
                col(AuditRun.started_at).is_(None),
            )
            .values(
                status="cancelled",
                outcome="error",
                finished_at=utcnow(),
                error="superseded by a re-audit under a newer policy version",
            )
        )
        s.commit()


# -- the daemon's hooks ------------------------------------------------------------------------------
def apply_for(daemon) -> dict[str, int]:
    st = daemon.settings
    try:
        return apply_policy_changes(daemon.ctx, st.policy, st.reaudit_on_policy_change, st.reaudit_max_per_hour)
    except Exception:  # a failed pass must not stop the daemon; the next pass tries again
        log.exception("applying policy changes failed")
        return {}


def _job_pass(key: str) -> None:
    if (daemon := _WATCHED.get(key)) is not None:
        apply_for(daemon)


def watch_policies(daemon, key: str = "main") -> dict[str, int]:
    """On daemon start: one pass now, then one a minute (for what the rate limit deferred)."""
    _WATCHED[key] = daemon
    counts = apply_for(daemon)
    if daemon.settings.reaudit_on_policy_change != "none":
        daemon.service.scheduler.add_job(
            _job_pass, "interval", args=[key], seconds=PASS_INTERVAL_S, id="policy-changes", replace_existing=True
        )
    return counts


def after_reload(daemon, results: dict[str, str | None]) -> dict[str, int]:
    """After SIGHUP: apply the policies that reloaded (a policy that failed keeps its last good
    version, so it changes nothing)."""
    if not any(err is None for err in results.values()):
        return {}
    return apply_for(daemon)
