"""The CI/CD gate: wait for a checkpoint's verdict and turn it into an exit code.

Exit codes: 0 pass (and warn, with the warnings printed), 1 block, 2 error, unknown checkpoint,
a verdict still waiting for its baseline, or timeout. Fail closed: whatever is not a final pass
or warn is never 0. A checkpoint is named by id, id prefix, or a local path, which is hashed as it is now (once per
call) and matched by that digest: never by its registered path, so changed content cannot borrow
the verdict of what was there before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd.policy.baseline import is_pending
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, Verdict

EXIT = {"pass": 0, "warn": 0, "block": 1, "error": 2}


@dataclass
class GateResult:
    state: str  # final | pending | unknown
    outcome: str | None = None
    checkpoint_id: str | None = None
    model: str | None = None
    audit_id: int | None = None
    policy: str | None = None
    reasons: list[dict] = field(default_factory=list)
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT.get(self.outcome or "error", 2) if self.state == "final" else 2


def resolve_checkpoint(engine: Engine, ref: str, digest_cache: dict) -> CheckpointRow | None:
    """An existing local path is hashed as it is now and matched by that digest only: a folder whose
    content changed since its audit never gets the old content's verdict. Anything else is an id or
    id prefix."""
    from auditd.registry.contain import ContainmentError
    from auditd.registry.digest import content_digest
    from auditd.report.document import NotFound, find_checkpoint

    p = Path(ref)
    if p.exists():
        if ref not in digest_cache:
            try:
                digest_cache[ref] = content_digest(p.resolve(), root=p.resolve())
            except ContainmentError as exc:
                raise GateRefused(str(exc)) from None
        with session(engine) as s:
            return s.get(CheckpointRow, digest_cache[ref])
    try:
        return find_checkpoint(engine, ref, match_path=False)
    except NotFound:
        return None


class GateRefused(Exception):
    pass


def gate_status(engine: Engine, ref: str, digest_cache: dict | None = None) -> GateResult:
    try:
        cp = resolve_checkpoint(engine, ref, {} if digest_cache is None else digest_cache)
    except GateRefused as exc:
        return GateResult("unknown", message=str(exc))
    if cp is None:
        return GateResult("unknown", message=f"no checkpoint matches {ref!r} (not yet seen by a registry source?)")
    with session(engine) as s:
        audit = s.exec(
            select(AuditRun).where(AuditRun.checkpoint_id == cp.id).order_by(col(AuditRun.id).desc())
        ).first()
        base = GateResult("pending", checkpoint_id=cp.id, model=cp.model)
        if audit is None:
            base.message = "no audit yet"
            return base
        base.audit_id, base.policy = audit.id, audit.policy
        if audit.status in ("queued", "running"):
            base.message = f"audit {audit.id} is {audit.status}"
            return base
        verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit.id)).first()
        if verdict is None:  # ended without a verdict row (e.g. given up): an error, never a pass
            base.state, base.outcome = "final", "error"
            base.reasons = [
                {"action": "error", "rule": audit.status, "message": audit.error or f"audit {audit.status}"}
            ]
            return base
        base.outcome, base.reasons = verdict.outcome, list(verdict.reasons or [])
        if is_pending(s, verdict):
            base.message = "the verdict waits for its baseline's audit to finish"
            return base
        base.state = "final"
        return base


def wait_for_gate(
    engine: Engine,
    ref: str,
    wait: bool,
    timeout_s: float,
    interval_s: float = 2.0,
    clock=time.monotonic,
    sleep=time.sleep,
) -> GateResult:
    deadline = clock() + timeout_s
    cache: dict = {}
    while True:
        result = gate_status(engine, ref, cache)
        if result.state == "final" or not wait:
            return result
        if clock() >= deadline:
            result.message = f"timed out after {timeout_s:.0f} s: {result.message}"
            return result
        sleep(min(interval_s, max(0.0, deadline - clock())))
