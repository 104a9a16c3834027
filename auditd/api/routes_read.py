"""Read-only routes: checkpoints, audits, verdicts. No token needed; nothing here writes."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from sqlmodel import col, select

from auditd.api.schemas import AuditOut, CheckpointOut, VerdictOut
from auditd.policy.baseline import is_pending
from auditd.report.document import NotFound, audit_report, find_checkpoint
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, Verdict

router = APIRouter(prefix="/v1", tags=["read"])

Limit = Query(50, ge=1, le=500, description="Page size.")
Offset = Query(0, ge=0, le=1_000_000, description="Rows to skip.")
MAX_ID = 2**62  # SQLite integers are 64-bit: larger ids cannot exist (and must not reach the driver)
Status = Literal["queued", "running", "done", "error", "cancelled"]
Outcome = Literal["pass", "warn", "block", "error"]


def _checkpoint(request: Request, ref: str) -> CheckpointRow:
    try:
        return find_checkpoint(request.app.state.engine, ref)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None


def verdict_out(s, v: Verdict, model: str) -> VerdictOut:
    return VerdictOut(
        audit_id=v.audit_id,
        checkpoint_id=v.checkpoint_id,
        model=model,
        outcome=v.outcome,
        policy=v.policy,
        reasons=v.reasons or [],
        created_at=v.created_at,
        final=not is_pending(s, v),
    )


@router.get("/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(
    request: Request, model: str | None = Query(None, max_length=200), limit: int = Limit, offset: int = Offset
):
    """Checkpoints seen by any registry source, newest first."""
    q = select(CheckpointRow).order_by(col(CheckpointRow.first_seen_at).desc(), col(CheckpointRow.id))
    if model is not None:
        q = q.where(CheckpointRow.model == model)
    with session(request.app.state.engine) as s:
        return s.exec(q.offset(offset).limit(limit)).all()


@router.get("/checkpoints/{ref:path}/verdict", response_model=VerdictOut)
def checkpoint_verdict(request: Request, ref: str = Path(..., max_length=4096)):
    """The verdict of a checkpoint's latest audit (404 while it has none)."""
    cp = _checkpoint(request, ref)
    with session(request.app.state.engine) as s:
        audit = s.exec(
            select(AuditRun).where(col(AuditRun.checkpoint_id) == cp.id).order_by(col(AuditRun.id).desc())
        ).first()
        v = s.exec(select(Verdict).where(Verdict.audit_id == audit.id)).first() if audit else None
        if v is None:
            raise HTTPException(
                404, f"checkpoint {cp.id} has no verdict yet" + (f" (audit {audit.id} {audit.status})" if audit else "")
            )
        return verdict_out(s, v, cp.model)


@router.get("/checkpoints/{ref:path}")
def get_checkpoint(request: Request, ref: str = Path(..., max_length=4096)) -> dict:
    """A checkpoint with its latest audit, per-category results and verdict."""
    cp = _checkpoint(request, ref)
    return audit_report(request.app.state.engine, cp.id)


@router.get("/audits", response_model=list[AuditOut])
def list_audits(
    request: Request,
    status: Status | None = None,
    checkpoint: str | None = Query(None, max_length=4096),
    limit: int = Limit,
    offset: int = Offset,
):
    """Audits, newest first."""
    q = select(AuditRun).order_by(col(AuditRun.id).desc())
    if status is not None:
        q = q.where(AuditRun.status == status)
    if checkpoint is not None:
        q = q.where(AuditRun.checkpoint_id == _checkpoint(request, checkpoint).id)
    with session(request.app.state.engine) as s:
        return s.exec(q.offset(offset).limit(limit)).all()


@router.get("/audits/{audit_id}")
def get_audit(request: Request, audit_id: int = Path(..., ge=1, le=MAX_ID)) -> dict:
    """One audit's report: status, per-category results, verdict."""
    with session(request.app.state.engine) as s:
        audit = s.get(AuditRun, audit_id)
    if audit is None:
        raise HTTPException(404, f"no audit {audit_id}")
    return audit_report(request.app.state.engine, audit.checkpoint_id, audit_id)


@router.get("/verdicts", response_model=list[VerdictOut])
def list_verdicts(
    request: Request,
    model: str | None = Query(None, max_length=200),
    outcome: Outcome | None = None,
    limit: int = Limit,
    offset: int = Offset,
):
    """Verdicts, newest first."""
    q = select(Verdict, col(CheckpointRow.model)).join(
        CheckpointRow, col(CheckpointRow.id) == col(Verdict.checkpoint_id)
    )
    if model is not None:
        q = q.where(CheckpointRow.model == model)
    if outcome is not None:
        q = q.where(Verdict.outcome == outcome)
    with session(request.app.state.engine) as s:
        rows = s.exec(q.order_by(col(Verdict.id).desc()).offset(offset).limit(limit)).all()
        return [verdict_out(s, v, m) for v, m in rows]
