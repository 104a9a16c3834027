"""Tables of the registry integration: webhook deliveries (replay protection, idempotency by
event id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from auditd.store.models import utcnow


class WebhookDelivery(SQLModel, table=True):
    """One accepted webhook event. Rejected requests (forged, stale, oversized) are only logged:
    they must change nothing, so they are never stored."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("source", "event_id"),)
    id: int | None = Field(default=None, primary_key=True)
    source: str  # "registry" (generic), "huggingface", "mlflow"
    event_id: str  # the sender's id of the event: a redelivery carries the same one
    signature: str  # sha256 of the signature header: the same signed request again is a replay
    status: str = "accepted"  # accepted|scheduled|duplicate|ignored|error
    checkpoint_id: str | None = None
    audit_id: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))
    received_at: datetime = Field(default_factory=utcnow)
