"""The record of verdicts decided again under a new policy version (auditd.policy.redecide):
old outcome -> new outcome, the two policy digests, and why. The verdict row itself always holds
the current decision; this table is its history."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text
from sqlmodel import Field, SQLModel

from auditd.store.models import utcnow


class VerdictChange(SQLModel, table=True):
    __tablename__ = "verdict_changes"
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    checkpoint_id: str = Field(index=True)
    old_outcome: str
    new_outcome: str
    old_policy_digest: str | None = None
    new_policy_digest: str | None = None
    reason: str = Field(default="", sa_column=Column(Text))  # e.g. "policy default: decision settings changed"
    at: datetime = Field(default_factory=utcnow)
