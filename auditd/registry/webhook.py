"""Registry webhooks: the generic signed `POST /v1/hooks/registry`, Hugging Face Hub webhooks, and
the signature checks of MLflow webhooks; and the checkpoint an accepted event names. Handing it
to the queue is the scheduler's part (auditd/scheduler/intake.py).

Security model. A webhook is accepted only when it proves it knows the shared secret (an
HMAC-SHA256 signature; Hugging Face Hub only sends the secret itself, compared in constant time),
is recent (timestamp within the tolerance), is small (body size limit), and has not been seen
before: the (source, event id) pair is unique in `webhook_deliveries`. The same signed request
sent again is a replay (409); a redelivery of a known event with a fresh signature is answered
"duplicate" (200) so the sender stops retrying; neither schedules anything. Rejected requests
are logged and change nothing in the database.

A webhook never makes auditd fetch from an arbitrary place: a generic event must name a local
path inside the configured roots, a Hugging Face event is resolved to a local snapshot (download
only when enabled), and an MLflow event only makes the MLflow source poll its own server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from auditd.registry.checkpoint import Checkpoint
from auditd.store.db import session
from auditd.store.hook_models import WebhookDelivery
from auditd.store.models import CheckpointRow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Auditd-Signature"
TIMESTAMP_HEADER = "X-Auditd-Timestamp"
HF_SECRET_HEADER = "X-Webhook-Secret"
MLFLOW_SIGNATURE_HEADER = "X-MLflow-Signature"
MLFLOW_TIMESTAMP_HEADER = "X-MLflow-Timestamp"
MLFLOW_DELIVERY_HEADER = "X-MLflow-Delivery-Id"
EVENT_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")


class WebhookRejected(Exception):
    """The request is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


# -- signatures ---------------------------------------------------------------------------------


def _header(headers, name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookRejected(401, f"missing {name} header")
    return value


def _fresh(timestamp: str, now: float, tolerance_s: float) -> None:
    try:
        ts = int(timestamp)
    except ValueError:
        raise WebhookRejected(401, "timestamp is not an integer of Unix seconds") from None
    if abs(now - ts) > tolerance_s:
        raise WebhookRejected(
            401, f"timestamp is {now - ts:+.0f} s off (tolerance {tolerance_s:.0f} s): stale or replayed"
        )


def sign_generic(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender adds: HMAC-SHA256 over b"{timestamp}." + body, hex-encoded."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {SIGNATURE_HEADER: f"sha256={mac}", TIMESTAMP_HEADER: ts}


def verify_generic(secret: str, headers, body: bytes, *, tolerance_s: float = 300, now: float | None = None) -> str:
    """Check a generic webhook; returns a digest of its signature (the replay key)."""
    signature, ts = _header(headers, SIGNATURE_HEADER), _header(headers, TIMESTAMP_HEADER)
    scheme, _, given = signature.partition("=")
    if scheme != "sha256" or not given:
        raise WebhookRejected(401, f"{SIGNATURE_HEADER} must be 'sha256=<hex>'")
    expected = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    given = given.strip().lower()  # hex is case-insensitive: an uppercase resend is the same signature
    if not hmac.compare_digest(expected, given):
        raise WebhookRejected(401, "signature does not match")
    _fresh(ts, time.time() if now is None else now, tolerance_s)
    return hashlib.sha256(f"sha256={given}".encode()).hexdigest()


def sign_mlflow(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """MLflow's scheme (mlflow/webhooks/delivery.py): "v1," + base64 HMAC-SHA256 over
    "{delivery_id}.{timestamp}.{body}"."""
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_mlflow(
    secret: str, headers, body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> tuple[str, str]:
    """Check an MLflow webhook; returns (delivery id, signature digest)."""
    signature = _header(headers, MLFLOW_SIGNATURE_HEADER)
    delivery, ts = _header(headers, MLFLOW_DELIVERY_HEADER), _header(headers, MLFLOW_TIMESTAMP_HEADER)
    if not signature.startswith("v1,"):
        raise WebhookRejected(401, f"{MLFLOW_SIGNATURE_HEADER} must be 'v1,<base64>'")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected(400, "body is not UTF-8") from None
    if not hmac.compare_digest(sign_mlflow(secret, delivery, ts, text), signature.strip()):
        raise WebhookRejected(401, "signature does not match")
    _fresh(ts, time.time() if now is None else now, tolerance_s)
    if not EVENT_ID.match(delivery):
        raise WebhookRejected(400, f"{MLFLOW_DELIVERY_HEADER} is not a valid id")
    return delivery, hashlib.sha256(signature.encode()).hexdigest()


def verify_hf(secret: str, headers) -> None:
    """Hugging Face Hub webhooks are not signed: the secret itself arrives in X-Webhook-Secret.
    Nothing derived from it is stored (a hash of a weak secret could be brute-forced)."""
    given = _header(headers, HF_SECRET_HEADER)
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise WebhookRejected(401, "webhook secret does not match")


# -- payloads -----------------------------------------------------------------------------------


class RegistryEvent(BaseModel):
    """The generic webhook's body: a new checkpoint at a local path."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(..., pattern=EVENT_ID.pattern, description="Sender's unique id of this event.")
    model: str = Field(..., min_length=1, max_length=200, description="Model (lineage) name.")
    path: str = Field(..., min_length=1, max_length=4096, description="Local checkpoint folder or .gguf file.")
    parent: str | None = Field(None, max_length=4096, description="Parent checkpoint id (sha256:...) or path.")
    kind: Literal["text", "t2i"] | None = Field(None, description="Default: detected from the folder.")
    metadata: dict[str, Any] = Field(default_factory=dict)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookRejected(400, "body is not JSON") from None


def parse_generic(body: bytes) -> RegistryEvent:
    try:
        return RegistryEvent.model_validate(_json(body))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise WebhookRejected(422, f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}") from None


@dataclass(frozen=True)
class HFEvent:
    repo_id: str
    revision: str
    repo_type: str
    action: str
    scope: str
    raw: dict = field(default_factory=dict)

    @property
    def relevant(self) -> bool:
        """A new revision of a model repo's files: the only event that can change a checkpoint."""
        return (
            self.repo_type == "model" and self.scope.startswith("repo.content") and self.action in ("create", "update")
        )

    @property
    def event_id(self) -> str:
        return f"{self.repo_id}@{self.revision}"  # content-addressed: a resend is the same event


def parse_hf(body: bytes) -> HFEvent:
    """The Hub's payload: {"event": {"action", "scope"}, "repo": {"type", "name", "headSha"}, ...}."""
    data = _json(body)
    try:
        event, repo = data["event"], data["repo"]
        # A commit id in upper case is the same commit (and the same event: a resend is a duplicate).
        parsed = HFEvent(
            repo_id=str(repo["name"]),
            revision=str(repo.get("headSha") or "").lower(),
            repo_type=str(repo["type"]),
            action=str(event["action"]),
            scope=str(event["scope"]),
            raw=data,
        )
    except (KeyError, TypeError):
        raise WebhookRejected(
            422, "not a Hugging Face webhook payload (needs event.action, event.scope, repo.type, repo.name)"
        ) from None
    if parsed.relevant and not re.fullmatch(r"[0-9a-f]{40}", parsed.revision):
        raise WebhookRejected(422, "repo.headSha must be a 40-hex commit id")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?", parsed.repo_id):
        raise WebhookRejected(422, "repo.name is not a valid repository id")
    return parsed


def hf_snapshot(repo_id: str, revision: str, cache_dir: Path | None, allow_download: bool = False) -> Path:
    """The local snapshot folder of a Hub revision; downloads it only when allowed."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=not allow_download))


def inside_roots(path: str, roots: list[Path]) -> Path:
    """The resolved path, if it lies inside one of the roots (symlinks cannot escape)."""
    resolved = Path(path).expanduser().resolve()
    root_of(resolved, roots)
    if not resolved.exists():
        raise WebhookRejected(422, f"path does not exist: {resolved}")
    return resolved


def root_of(path: Path, roots: list[Path]) -> Path:
    """The webhook root a resolved path lies in (the containment root of its checkpoint)."""
    for root in roots:
        r = Path(root).expanduser().resolve()
        if path.is_relative_to(r):
            return r
    raise WebhookRejected(422, "path is outside the folders webhooks may name (AUDITD_WEBHOOK_ROOTS)")


# -- deliveries ---------------------------------------------------------------------------------


def record_delivery(
    engine: Engine, source: str, event_id: str, signature: str, payload: dict
) -> tuple[WebhookDelivery, bool]:
    """Store an accepted delivery; (delivery, new). A known event id is not new: with the same
    signature it is a replay (WebhookRejected 409), with another it is a redelivery."""
    same_event = (WebhookDelivery.source == source, func.lower(WebhookDelivery.event_id) == event_id.lower())
    with session(engine) as s:  # ids compared case-insensitively: "ABC" replayed as "abc" is still a replay
        known = s.exec(select(WebhookDelivery).where(*same_event)).first()
        if known is None:
            row = WebhookDelivery(source=source, event_id=event_id, signature=signature, payload=payload)
            s.add(row)
            try:
                s.commit()
                return row, True
            except IntegrityError:  # a concurrent delivery of the same event won
                s.rollback()
                known = s.exec(select(WebhookDelivery).where(*same_event)).one()
    if hmac.compare_digest(known.signature, signature):
        raise WebhookRejected(409, f"replay of delivery {event_id!r}")
    return known, False


def finish_delivery(
    engine: Engine,
    delivery_id: int,
    status: str,
    *,
    checkpoint_id: str | None = None,
    audit_id: int | None = None,
    error: str | None = None,
) -> None:
    with session(engine) as s:
        row = s.get_one(WebhookDelivery, delivery_id)
        row.status, row.checkpoint_id, row.audit_id, row.error = status, checkpoint_id, audit_id, error
        s.add(row)
        s.commit()


def resolve_parent(engine: Engine, parent: str | None) -> str | None:
    if not parent:
        return None
    if parent.startswith("sha256:"):
        return parent
    resolved = str(Path(parent).expanduser().resolve())
    with session(engine) as s:
        row = s.exec(select(CheckpointRow).where(CheckpointRow.path == resolved)).first()
    return row.id if row else None


def _contained_digest(path: Path, root: Path, settings) -> str:
    """The digest, after the checks that need no reading: links out of `root`, oversized configs."""
    from auditd.backends.limits import check_input_sizes
    from auditd.registry.contain import check_contained
    from auditd.registry.digest import content_digest

    check_contained(path, root)
    check_input_sizes(path, settings.max_config_bytes, settings.max_tokenizer_bytes)
    return content_digest(path)


def generic_checkpoint(engine: Engine, settings, event: RegistryEvent, path: Path) -> Checkpoint:
    """The checkpoint a generic event names, hashed (hashing takes time: after the HTTP answer)."""
    from auditd.registry.dir import detect_kind

    root = root_of(path, settings.webhook_path_roots)
    digest = _contained_digest(path, root, settings)  # a link leading out of the webhook roots is refused
    kind = event.kind or (detect_kind(path) if path.is_dir() else "text")
    return Checkpoint(
        id=digest,
        model=event.model,
        kind=kind,
        path=str(path),
        source="webhook",
        parent=resolve_parent(engine, event.parent),
        metadata={"event_id": event.event_id, "lineage": {"parent": event.parent}, **event.metadata, "root": str(root)},
    )


def hf_checkpoint(settings, event: HFEvent) -> Checkpoint:
    """The checkpoint of a Hub revision: its local snapshot, hashed."""
    from auditd.registry.dir import detect_kind

    path = hf_snapshot(event.repo_id, event.revision, settings.hf_cache_dir, settings.hf_download)
    digest = _contained_digest(path, path, settings)  # snapshot files may link into the repo's blobs/ only
    return Checkpoint(
        id=digest,
        model=event.repo_id,
        kind=detect_kind(path),
        path=str(path),
        source="huggingface",
        metadata={"repo": event.repo_id, "revision": event.revision, "root": str(path)},
    )


def unprocessed_deliveries(engine: Engine) -> list[WebhookDelivery]:
    """Deliveries accepted but never handed over (a crash or stop in between). MLflow ones need
    nothing: the first poll finds them."""
    with session(engine) as s:
        return list(
            s.exec(
                select(WebhookDelivery).where(
                    WebhookDelivery.status == "accepted", col(WebhookDelivery.source).in_(("registry", "huggingface"))
                )
            )
        )
