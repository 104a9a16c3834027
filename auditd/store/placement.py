"""Where a running audit runs: the host of a local audit, "ray:<node ip>/<node id>" of a Ray task
(`auditd status`, the per-node metrics). Written by whichever process runs the audit."""

from __future__ import annotations

import socket

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col

from auditd.store.db import session
from auditd.store.models import AuditRun

HOST = socket.gethostname()


def place(engine: Engine, audit_id: int, placement: str) -> None:
    """Record where a running audit runs (an audit no longer running is left as it is)."""
    with session(engine) as s:
        s.exec(
            update(AuditRun)
            .where(col(AuditRun.id) == audit_id, col(AuditRun.status) == "running")
            .values(placement=placement[:200])
        )
        s.commit()
