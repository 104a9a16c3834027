"""The audit queue lives in the audit_runs table: priorities, atomic claims, restart recovery.

A claim is a conditional UPDATE (status queued -> running), so two workers can never run the same
audit, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from auditd.store.db import session
from auditd.store.models import AuditRun, utcnow


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def enqueue(
    engine: Engine,
    checkpoint_id: str,
    *,
    request_key: str = "auto",
    policy: str = "default",
    priority: int = 0,
    device: str = "any",
) -> tuple[AuditRun, bool]:
    """Queue an audit; (run, created). Idempotent per (checkpoint, request_key). `device` "any"
    lets the first free device take it."""
    with session(engine) as s:
        existing = s.exec(
            select(AuditRun).where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.request_key == request_key)
        ).first()
        if existing:
            return existing, False
        run = AuditRun(
            checkpoint_id=checkpoint_id, request_key=request_key, policy=policy, priority=priority, device=device
        )
        s.add(run)
        try:
            s.commit()
        except IntegrityError:  # a concurrent enqueue won the race: same audit
            s.rollback()
            return s.exec(
                select(AuditRun).where(AuditRun.checkpoint_id == checkpoint_id, AuditRun.request_key == request_key)
            ).one(), False
        return run, True


def claim_next(
    engine: Engine, device: str, worker: str, max_attempts: int | Callable[[str], int], gave_up: list[int] | None = None
) -> AuditRun | None:
    """Atomically take the highest-priority queued audit for a device. Audits already interrupted
    `max_attempts` times (an int, or a function of the audit's policy name) are given up with an
    error verdict, like any failed audit (never as passed), and their ids appended to `gave_up`:
    the caller writes those verdicts back (they are stored pending)."""
    from auditd.runner.audit import fail_audit

    limit = max_attempts if callable(max_attempts) else (lambda _policy: max_attempts)
    gave_up = [] if gave_up is None else gave_up
    with session(engine) as s:
        candidates = s.exec(
            select(AuditRun)
            .where(col(AuditRun.status) == "queued", col(AuditRun.device).in_((device, "any")))
            .order_by(col(AuditRun.priority).desc(), col(AuditRun.id))
            .limit(8)
        ).all()
    for c in candidates:
        assert c.id is not None  # read from the table
        if c.attempts >= limit(c.policy):
            message = f"gave up after {c.attempts} interrupted attempts"
            if fail_audit(engine, c.id, "error", message, from_status=("queued",)) is not None:
                gave_up.append(c.id)
            continue
        if claimed := claim(engine, c.id, worker, device):
            return claimed
    return None


def claim(engine: Engine, audit_id: int, worker: str, device: str | None = None) -> AuditRun | None:
    """Take one queued audit (onto `device`, if given); None if someone else has it."""
    with session(engine) as s:
        now = utcnow()
        values = dict(status="running", worker=worker, attempts=AuditRun.attempts + 1, heartbeat_at=now)
        if device:
            values["device"] = device
        res = s.exec(
            update(AuditRun).where(col(AuditRun.id) == audit_id, col(AuditRun.status) == "queued").values(**values)
        )
        s.commit()
        if res.rowcount != 1:
            return None
        run = s.get_one(AuditRun, audit_id)
        if run.started_at is None:
            run.started_at = now
            s.add(run)
            s.commit()
        return run


def _pid_alive(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another host: only its heartbeat can tell
    if int(pid) == os.getpid():
        return False  # our own pid at start-up means a previous life of this process (containers)
    try:
        os.kill(int(pid), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def recover(
    engine: Engine, heartbeat_timeout_s: float, running_here: set[int] | frozenset[int] = frozenset()
) -> list[int]:
    """Requeue audits whose worker died (same host: pid gone; any host: heartbeat stale).
    Their stored samples are kept: the audit resumes, it does not start over."""
    stale_before = utcnow() - timedelta(seconds=heartbeat_timeout_s)
    requeued = []
    with session(engine) as s:
        for a in s.exec(select(AuditRun).where(AuditRun.status == "running")).all():
            if a.id in running_here:
                continue
            dead = a.worker is None or not _pid_alive(a.worker)
            stale = a.heartbeat_at is not None and a.heartbeat_at < stale_before
            if dead or stale:
                res = s.exec(
                    update(AuditRun)
                    .where(
                        col(AuditRun.id) == a.id, col(AuditRun.status) == "running", col(AuditRun.worker) == a.worker
                    )
                    .values(status="queued", worker=None)
                )
                if res.rowcount and a.id is not None:
                    requeued.append(a.id)
        s.commit()
    return requeued


def heartbeat(engine: Engine, audit_ids: set[int]) -> None:
    if not audit_ids:
        return
    with session(engine) as s:
        s.exec(
            update(AuditRun)
            .where(col(AuditRun.id).in_(audit_ids), col(AuditRun.status) == "running")
            .values(heartbeat_at=utcnow())
        )
        s.commit()
