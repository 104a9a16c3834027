"""Intake: the one place a found checkpoint becomes a recorded row and a queued audit.

Registry sources (polled) and webhooks (pushed) only produce `Checkpoint`s (auditd/registry/); this
module records them and queues their audits, so the registry never reaches into the queue.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from auditd.policy.model import Policy
from auditd.policy.versions import request_key, version_of
from auditd.registry import webhook as wh
from auditd.registry.checkpoint import Checkpoint
from auditd.scheduler import queue
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, ModelRow

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running", "done")


def ingest(s: Session, cp: Checkpoint) -> CheckpointRow:
    """Record a checkpoint (and its model) if new; the caller commits."""
    row = s.get(CheckpointRow, cp.id)
    if row is None:
        row = CheckpointRow(
            id=cp.id,
            model=cp.model,
            kind=cp.kind,
            source=cp.source,
            path=cp.path,
            parent_id=cp.parent,
            meta=cp.metadata,
        )
        s.add(row)
    if s.get(ModelRow, cp.model) is None:
        s.add(ModelRow(name=cp.model, kind=cp.kind))
    return row


def enqueue_polled(engine: Engine, policy_ref: str, policy: Policy, new: list[Checkpoint]) -> None:
    """Queue the audits of checkpoints a poll recorded (ingested in the poll's own transaction)."""
    for cp in new:
        if policy.plan(cp.kind):
            # Keyed by plan version: a second poll cannot queue it twice, a changed plan can.
            queue.enqueue(engine, cp.id, policy=policy_ref, request_key=request_key(policy_ref, version_of(policy)))
        else:
            log.info("checkpoint %s (%s) recorded; policy %r has no %s probes", cp.id, cp.model, policy.name, cp.kind)
        log.info("new checkpoint %s model=%s kind=%s path=%s", cp.id, cp.model, cp.kind, cp.path)


def schedule_checkpoint(engine: Engine, settings, cp: Checkpoint, event_key: str) -> tuple[str, int]:
    """Record the checkpoint and queue one audit for it, unless one is already queued, running or
    done for the same content (a webhook and a poll announcing one checkpoint audit it once)."""
    with session(engine) as s:
        ingest(s, cp)
        s.commit()
        existing = s.exec(
            select(AuditRun)
            .where(AuditRun.checkpoint_id == cp.id, col(AuditRun.status).in_(ACTIVE))
            .order_by(col(AuditRun.id).desc())
        ).first()
    if existing is not None and existing.id is not None:
        return "duplicate", existing.id
    run, _ = queue.enqueue(engine, cp.id, request_key=event_key, policy=settings.policy, device=settings.device)
    assert run.id is not None  # stored: the queue commits before it returns
    return "scheduled", run.id


def _hand_over(
    engine: Engine, settings, delivery_id: int, what: str, event_key: str, checkpoint: Callable[[], Checkpoint]
) -> None:
    try:
        cp = checkpoint()
        status, audit_id = schedule_checkpoint(engine, settings, cp, event_key)
        wh.finish_delivery(engine, delivery_id, status, checkpoint_id=cp.id, audit_id=audit_id)
        log.info("%s: checkpoint %s %s (audit %s)", what, cp.id[:19], status, audit_id)
    except Exception as exc:
        log.error("%s could not be handed over: %s", what, exc)
        wh.finish_delivery(engine, delivery_id, "error", error=" ".join(str(exc).split())[:500])


def process_generic(engine: Engine, settings, delivery_id: int, event: wh.RegistryEvent, path: Path) -> None:
    """Hash the named checkpoint and queue its audit (after the HTTP answer: hashing takes time)."""
    _hand_over(
        engine,
        settings,
        delivery_id,
        f"webhook event {event.event_id}",
        f"event:{event.event_id}",
        lambda: wh.generic_checkpoint(engine, settings, event, path),
    )


def process_hf(engine: Engine, settings, delivery_id: int, event: wh.HFEvent) -> None:
    """Resolve a Hub revision to its local snapshot and queue its audit."""
    _hand_over(
        engine,
        settings,
        delivery_id,
        f"hub event {event.event_id}",
        f"event:hf:{event.event_id}",
        lambda: wh.hf_checkpoint(settings, event),
    )


def resume_deliveries(engine: Engine, settings) -> int:
    """Hand over deliveries accepted before a crash or stop but never processed (at start-up,
    when nothing else can be processing them)."""
    rows = wh.unprocessed_deliveries(engine)
    for row in rows:
        assert row.id is not None
        try:
            if row.source == "registry":
                event = wh.RegistryEvent.model_validate(row.payload)
                process_generic(
                    engine, settings, row.id, event, wh.inside_roots(event.path, settings.webhook_path_roots)
                )
            else:
                process_hf(engine, settings, row.id, wh.parse_hf(json.dumps(row.payload).encode()))
        except (wh.WebhookRejected, ValidationError) as exc:
            wh.finish_delivery(engine, row.id, "error", error=str(exc)[:500])
    return len(rows)
