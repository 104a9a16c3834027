"""Response and request bodies of the HTTP API (they make the OpenAPI document precise)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CheckpointOut(BaseModel):
    id: str
    model: str
    kind: str
    source: str
    path: str
    parent_id: str | None = None
    first_seen_at: datetime


class AuditOut(BaseModel):
    id: int
    checkpoint_id: str
    request_key: str
    policy: str
    priority: int
    status: str
    outcome: str | None = None
    attempts: int
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None


class VerdictOut(BaseModel):
    audit_id: int
    checkpoint_id: str
    model: str
    outcome: str = Field(description="pass | warn | block | error")
    policy: str
    reasons: list[dict[str, Any]]
    created_at: datetime
    final: bool = Field(description="False while the verdict waits for its baseline's audit to finish")


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(..., min_length=1, max_length=4096, description="Checkpoint id, unique id prefix, or path.")
    policy: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$", description="Policy name in policies_dir (not a path)."
    )
    priority: int = Field(10, ge=-100, le=100, description="Higher runs first.")
    request_key: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._:@/+=-]{1,200}$",
        description="Idempotency key: the same key for the same checkpoint returns the same audit.",
    )


class TriggerOut(BaseModel):
    audit_id: int
    checkpoint_id: str
    created: bool
    status: str


class HookOut(BaseModel):
    status: str = Field(description="accepted | duplicate | ignored")
    event_id: str | None = None
    delivery_id: int | None = None
    audit_id: int | None = None
