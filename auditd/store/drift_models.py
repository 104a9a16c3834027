"""Per-category drift of an audit against its baseline, stored at verdict time by the policy
(auditd/policy/baseline.py) and read by /metrics and reports without recomputing the comparison.
A table, so it lives in the store (the lowest layer) where the migrations register it."""

from __future__ import annotations

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class CategoryDrift(SQLModel, table=True):
    """An audit's change against its baseline, per probe and category, as decided at verdict time."""

    __tablename__ = "category_drift"
    __table_args__ = (UniqueConstraint("audit_id", "probe_id", "category", "metric"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    baseline_audit_id: int
    probe_id: str
    category: str
    metric: str = "harmful_rate"  # harmful_rate | refusal_rate (benign prompts: over-refusal)
    rate: float
    base_rate: float
    delta: float
    p_value: float
    significant: bool
