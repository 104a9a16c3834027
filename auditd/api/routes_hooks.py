"""Webhook routes: generic signed registry events, Hugging Face Hub, MLflow.

Each route: bounded body read (413 past the limit) -> authenticity and freshness
(auditd/registry/webhook.py; 401) -> payload (400/422) -> delivery recorded once per event id
(a replay 409, a redelivery "duplicate") -> 202, and the hand-over (hashing, queueing) runs after
the answer. A route whose secret is not configured is disabled (403). Rejections are logged with
the client address and change nothing.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from auditd.api.schemas import HookOut
from auditd.registry import webhook as wh
from auditd.scheduler import intake

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/hooks", tags=["webhooks"])

_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
GENERIC_DOC = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": wh.RegistryEvent.model_json_schema()}}}
}


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise wh.WebhookRejected(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():  # a lying or absent Content-Length is cut off here
        body += chunk
        if len(body) > limit:
            raise wh.WebhookRejected(413, f"body larger than {limit} bytes")
    return bytes(body)


def _secret(request: Request, name: str) -> str:
    settings = request.app.state.settings
    secret = getattr(settings, name, None) if settings is not None else None
    if not secret:
        raise wh.WebhookRejected(403, f"this webhook is disabled: set AUDITD_{name.upper()}")
    return secret.get_secret_value()


def _reject(request: Request, source: str, exc: wh.WebhookRejected) -> HTTPException:
    client = request.client.host if request.client else "?"
    log.warning("webhook %s rejected (%s) from %s: %s", source, exc.status, client, exc.reason)
    return HTTPException(exc.status, exc.reason)


def _accepted(response: Response, delivery, new: bool, event_id: str) -> HookOut:
    if not new:
        response.status_code = 200
        return HookOut(status="duplicate", event_id=event_id, delivery_id=delivery.id, audit_id=delivery.audit_id)
    return HookOut(status="accepted", event_id=event_id, delivery_id=delivery.id)


@router.post("/registry", response_model=HookOut, status_code=202, openapi_extra=GENERIC_DOC)
async def registry_hook(request: Request, response: Response, background: BackgroundTasks):
    """A new checkpoint at a local path. Headers: X-Auditd-Timestamp (Unix seconds) and
    X-Auditd-Signature: sha256=HEX(HMAC-SHA256(secret, "{timestamp}." + body))."""
    settings = request.app.state.settings
    engine = request.app.state.engine
    try:
        secret = _secret(request, "webhook_secret")
        body = await read_limited(request, settings.webhook_max_body_bytes)
        signature = wh.verify_generic(secret, request.headers, body, tolerance_s=settings.webhook_tolerance_s)
        event = wh.parse_generic(body)
        path = wh.inside_roots(event.path, settings.webhook_path_roots)
        delivery, new = await run_in_threadpool(
            wh.record_delivery, engine, "registry", event.event_id, signature, event.model_dump()
        )
    except wh.WebhookRejected as exc:
        raise _reject(request, "registry", exc) from None
    if new:
        assert delivery.id is not None  # stored by record_delivery
        background.add_task(intake.process_generic, engine, settings, delivery.id, event, path)
    return _accepted(response, delivery, new, event.event_id)


@router.post("/huggingface", response_model=HookOut, status_code=202, openapi_extra=_BODY)
async def huggingface_hook(request: Request, response: Response, background: BackgroundTasks):
    """A Hugging Face Hub webhook (secret in X-Webhook-Secret). Model repo content updates are
    resolved to a local snapshot (downloaded only with AUDITD_HF_DOWNLOAD) and audited."""
    settings = request.app.state.settings
    engine = request.app.state.engine
    try:
        secret = _secret(request, "hf_webhook_secret")
        body = await read_limited(request, settings.webhook_max_body_bytes)
        wh.verify_hf(secret, request.headers)
        event = wh.parse_hf(body)
        if not event.relevant:
            response.status_code = 200
            return HookOut(status="ignored", event_id=event.event_id)
        # Unsigned: a resend and a replay look alike; both are keyed on the revision and change nothing.
        delivery, new = await run_in_threadpool(
            wh.record_delivery, engine, "huggingface", event.event_id, "hub:" + event.event_id, event.raw
        )
    except wh.WebhookRejected as exc:
        if exc.status == 409:  # a resend of a known revision: nothing to do, and no error for the Hub
            response.status_code = 200
            return HookOut(status="duplicate", event_id=f"{event.repo_id}@{event.revision}")
        raise _reject(request, "huggingface", exc) from None
    if new:
        assert delivery.id is not None  # stored by record_delivery
        background.add_task(intake.process_hf, engine, settings, delivery.id, event)
    return _accepted(response, delivery, new, event.event_id)


@router.post("/mlflow", response_model=HookOut, status_code=202, openapi_extra=_BODY)
async def mlflow_hook(request: Request, response: Response, background: BackgroundTasks):
    """An MLflow registry webhook (X-MLflow-Signature: v1,<base64 HMAC-SHA256 over
    "{delivery_id}.{timestamp}.{body}">). A model-version event makes the MLflow source poll now."""
    settings = request.app.state.settings
    engine = request.app.state.engine
    try:
        secret = _secret(request, "mlflow_webhook_secret")
        body = await read_limited(request, settings.webhook_max_body_bytes)
        delivery_id, signature = wh.verify_mlflow(
            secret, request.headers, body, tolerance_s=settings.webhook_tolerance_s
        )
        payload = wh._json(body)
        if not isinstance(payload, dict):
            raise wh.WebhookRejected(422, "payload must be a JSON object")
        delivery, new = await run_in_threadpool(wh.record_delivery, engine, "mlflow", delivery_id, signature, payload)
    except wh.WebhookRejected as exc:
        raise _reject(request, "mlflow", exc) from None
    if payload.get("entity") not in ("model_version", "model_version_tag", "model_version_alias"):
        response.status_code = 200
        return HookOut(status="ignored", event_id=delivery_id, delivery_id=delivery.id)
    if new and (poll := request.app.state.poll) is not None:
        assert delivery.id is not None  # stored by record_delivery
        background.add_task(_poll_and_mark, engine, poll, delivery.id)
    return _accepted(response, delivery, new, delivery_id)


def _poll_and_mark(engine, poll, delivery_id: int) -> None:
    try:
        poll()
        wh.finish_delivery(engine, delivery_id, "polled")
    except Exception as exc:  # the periodic poll will still find the version
        log.error("poll after MLflow webhook failed: %s", exc)
        wh.finish_delivery(engine, delivery_id, "error", error=str(exc)[:500])
