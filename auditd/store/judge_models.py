"""Judge validations: a judge's measured agreement with human labels, one row per (judge
configuration, gold file). Verdicts name the kappa of the judges that decided them, and a policy
can cap blocks decided by judges below `judges_min_kappa`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from auditd.store.models import utcnow


class JudgeValidation(SQLModel, table=True):
    __tablename__ = "judge_validations"
    # Validating the same judge configuration on the same gold file again replaces the row.
    __table_args__ = (UniqueConstraint("judge", "config_digest", "gold_digest"),)
    id: int | None = Field(default=None, primary_key=True)
    judge: str = Field(index=True)  # judge id, e.g. "refusal"
    config_digest: str  # sha256 of the judge id and its options
    gold: str  # the gold file's name (the metrics label)
    gold_digest: str  # sha256 of the gold file's bytes
    gold_format: str  # xstest | harmbench | jailbreakbench | pyrit | auditd
    task: str  # "refusal" or "harm": what the headline figures measure
    n: int = 0
    accuracy: float | None = None
    kappa: float | None = None
    kappa_lo: float | None = None  # bootstrap 95% interval
    kappa_hi: float | None = None
    figures: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # the full report
    created_at: datetime = Field(default_factory=utcnow, index=True)
