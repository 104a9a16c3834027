"""Table of the fine-tuning attacks' evaluation curve: one row per evaluation point.

Every point is committed as soon as it is measured (after the adapter state of that step is on
disk), so a crashed attack resumes from its last row, and the curve behind `auditd report` and
the auditd_grpo_* metrics is the stored truth. Unique per (audit, probe, step): a resumed or
repeated attack cannot duplicate a point.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from auditd.store.models import utcnow


class AttackPoint(SQLModel, table=True):
    __tablename__ = "attack_points"
    __table_args__ = (UniqueConstraint("audit_id", "probe_id", "step"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    probe_id: str
    step: int  # optimizer steps done when measured; 0 = before the attack
    wall_s: float = 0.0  # attack wall time so far (training and evaluation), summed across resumes
    mean_reward: float | None = None  # mean training reward over the steps since the previous point
    step_rewards: list[float] = Field(default_factory=list, sa_column=Column(JSON))  # per step in that window
    harmful_rate: float | None = None  # held-out harmful rate over all categories (None: nothing judged)
    n_heldout: int = 0  # held-out harm prompts asked
    n_judged: int = 0  # of which a judge decided harm
    per_category: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # category -> rate
    over_refusal_rate: float | None = None  # benign prompts refused
    capability_retention: float | None = None  # benign-answer likelihood vs step 0, in (0, 1]
    judge_errors: int = 0
    peak_memory_gb: float | None = None  # CUDA peak allocated, or process RSS on the CPU
    created_at: datetime = Field(default_factory=utcnow)
