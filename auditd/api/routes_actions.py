"""State-changing routes: trigger and cancel audits. Every one needs the bearer token."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from sqlalchemy import update
from sqlmodel import col

from auditd.api.auth import require_token
from auditd.api.routes_read import MAX_ID, _checkpoint
from auditd.api.schemas import AuditOut, TriggerIn, TriggerOut
from auditd.policy.load import PolicyError, resolve_named_policy
from auditd.scheduler import queue
from auditd.store.db import session
from auditd.store.models import AuditRun, Verdict, utcnow

router = APIRouter(prefix="/v1", tags=["actions"], dependencies=[Depends(require_token)])


def _settings(request: Request):
    settings = request.app.state.settings
    if settings is None:
        raise HTTPException(503, "this server has no settings (read-only)")
    return settings


@router.post("/audits", response_model=TriggerOut, status_code=202)
def trigger_audit(request: Request, body: TriggerIn, response: Response):
    """Queue an audit of a known checkpoint. Idempotent per (checkpoint, request_key)."""
    settings = _settings(request)
    cp = _checkpoint(request, body.checkpoint)
    policy = body.policy or settings.policy
    if body.policy is not None:  # only named policies of policies_dir: no server-side paths via the API
        try:
            resolve_named_policy(body.policy, settings.policies_dir)
        except PolicyError as exc:
            raise HTTPException(422, str(exc)) from None
    key = f"api:{body.request_key}" if body.request_key else f"api:{uuid.uuid4()}"
    run, created = queue.enqueue(
        request.app.state.engine, cp.id, request_key=key, policy=policy, priority=body.priority, device=settings.device
    )
    if not created:
        response.status_code = 200
    assert run.id is not None  # stored by enqueue
    return TriggerOut(audit_id=run.id, checkpoint_id=cp.id, created=created, status=run.status)


@router.post("/audits/{audit_id}/cancel", response_model=AuditOut)
def cancel_audit(request: Request, audit_id: int = Path(..., ge=1, le=MAX_ID)):
    """Cancel an audit: a queued one at once, a running one at its next batch. Its verdict is
    error (a cancelled audit never passes)."""
    engine = request.app.state.engine
    with session(engine) as s:
        if s.get(AuditRun, audit_id) is None:
            raise HTTPException(404, f"no audit {audit_id}")
        res = s.exec(
            update(AuditRun)
            .where(col(AuditRun.id) == audit_id, col(AuditRun.status) == "queued")
            .values(status="cancelled", outcome="error", error="cancelled by request", finished_at=utcnow())
        )
        if res.rowcount == 1:  # never ran: record its error verdict here (a running one records its own)
            audit = s.get_one(AuditRun, audit_id)
            s.add(
                Verdict(
                    audit_id=audit_id,
                    checkpoint_id=audit.checkpoint_id,
                    outcome="error",
                    policy=audit.policy,
                    reasons=[{"action": "error", "rule": "cancelled", "message": "cancelled by request"}],
                )
            )
        s.exec(
            update(AuditRun)
            .where(col(AuditRun.id) == audit_id, col(AuditRun.status) == "running")
            .values(cancel_requested=True)
        )
        s.commit()
        audit = s.get_one(AuditRun, audit_id)
        s.refresh(audit)
        return audit
