"""Tables. One row per fact; aggregates (category_results) are written once per probe run so
that scrapes and reports never scan the samples table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class ModelRow(SQLModel, table=True):
    __tablename__ = "models"
    name: str = Field(primary_key=True)
    kind: str  # "text" | "t2i"
    baseline_checkpoint_id: str | None = None  # pinned baseline for drift, when set
    created_at: datetime = Field(default_factory=utcnow)


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "checkpoints"
    id: str = Field(primary_key=True)  # content digest
    model: str = Field(index=True)
    kind: str
    source: str
    path: str
    parent_id: str | None = None  # checkpoint id of the parent, when lineage names one
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    first_seen_at: datetime = Field(default_factory=utcnow)


class RegistryEntry(SQLModel, table=True):
    """What a registry source has seen at a location, so a restart does not re-report it and an
    unchanged folder (same stat signature) is not hashed again."""

    __tablename__ = "registry_entries"
    source: str = Field(primary_key=True)
    location: str = Field(primary_key=True)
    signature: str  # file names, sizes and mtimes
    checkpoint_id: str | None = None
    error: str | None = None  # why the location could not be made a checkpoint
    seen_at: datetime = Field(default_factory=utcnow)


class AuditRun(SQLModel, table=True):
    __tablename__ = "audit_runs"
    __table_args__ = (UniqueConstraint("checkpoint_id", "request_key"),)
    id: int | None = Field(default=None, primary_key=True)
    checkpoint_id: str = Field(index=True, foreign_key="checkpoints.id")
    # Why this audit exists: "policy:<policy>@<plan digest>" (a registry poll or a re-audit after a
    # policy change), "auto" (polls before policy versions), "event:<id>", "cli:<uuid>", "api:<key>".
    # Unique per checkpoint, so a duplicate event or a second poll cannot queue it twice.
    request_key: str = "auto"
    policy: str = "default"
    priority: int = 0  # higher runs first
    device: str = "cpu"
    status: str = Field(default="queued", index=True)  # queued|running|done|error|cancelled
    outcome: str | None = None  # pass|warn|block|error once finished
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    worker: str | None = None  # host:pid of the process running it
    # Where it runs or last ran: the host of a local audit, "ray:<node ip>/<node id>" of a Ray task.
    placement: str | None = None
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    finished_at: datetime | None = Field(default=None, index=True)
    duration_s: float | None = None
    # Seconds spent inside backend.generate and judges, to measure auditd's own overhead.
    generate_s: float = 0.0
    judge_s: float = 0.0
    # The policy version the audit ran under (auditd.policy.versions); a re-decision updates the
    # decision part. None for audits stored before versions were recorded.
    policy_digest: str | None = None
    plan_digest: str | None = None
    decision_digest: str | None = None
    reuse: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))  # stored work it reused
    # Model-load seconds and the batch size used (auditd.runner.timings); token counts are in samples.
    timings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class ProbeRun(SQLModel, table=True):
    __tablename__ = "probe_runs"
    __table_args__ = (UniqueConstraint("audit_id", "probe_id"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    probe_id: str
    status: str = "running"  # running|done|error
    n_items: int = 0
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    error: str | None = Field(default=None, sa_column=Column(Text))
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    # The keys its samples were made under (auditd.policy.versions): a later audit of the same
    # checkpoint reuses them when these match; outputs_kept says whether they can be judged again.
    gen_digest: str | None = None
    judge_digest: str | None = None
    outputs_kept: bool | None = None


class Sample(SQLModel, table=True):
    __tablename__ = "samples"
    # The key of one generation: a resumed audit skips what is stored, a re-run cannot duplicate.
    __table_args__ = (UniqueConstraint("audit_id", "probe_id", "item_index", "variant"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(foreign_key="audit_runs.id")
    probe_id: str
    item_index: int
    variant: str = ""
    category: str
    prompt: str = Field(sa_column=Column(Text))
    output: str = Field(sa_column=Column(Text))
    harmful: bool | None = None
    refused: bool | None = None
    score: float | None = None
    judge_error: bool = False
    degenerate: bool | None = None  # empty/repetitive/non-language output (never counted harmful)
    decided_by: str = ""  # the judge whose decision `harmful`/`refused` is (a cascade's escalation target)
    escalated: bool | None = None  # judge:cascade sent this sample to its model judge (None: no cascade)
    judges_agree: bool | None = None  # judge:cascade: its two judges agreed (None: only one of them ran)
    # Two-stage generation (auditd.runner.early_stop): True when the answer stopped after its prefix
    # (the stored output is that prefix), False when it ran on; None when early stop did not apply.
    early_stop: bool | None = None
    new_tokens: int | None = None  # tokens this audit generated for it (None: copied, or a text backend)
    created_at: datetime = Field(default_factory=utcnow)


class JudgeScoreRow(SQLModel, table=True):
    __tablename__ = "judge_scores"
    id: int | None = Field(default=None, primary_key=True)
    sample_id: int = Field(index=True, foreign_key="samples.id")
    judge: str
    harmful: bool | None = None
    refused: bool | None = None
    score: float | None = None
    raw: str = Field(default="", sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    categories: list[str] = Field(default_factory=list, sa_column=Column(JSON))


class CategoryResult(SQLModel, table=True):
    __tablename__ = "category_results"
    __table_args__ = (UniqueConstraint("audit_id", "probe_id", "category"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    probe_id: str
    category: str
    n: int = 0  # samples
    n_judged: int = 0  # samples with a harm decision
    n_harmful: int = 0
    n_refused: int = 0
    n_judge_errors: int = 0
    n_degenerate: int = 0  # empty/repetitive/non-language answers: neither harmful nor refused
    harmful_rate: float | None = None  # n_harmful / n_judged
    refusal_rate: float | None = None  # n_refused / n
    degenerate_rate: float | None = None  # n_degenerate / n


class JudgeErrorCount(SQLModel, table=True):
    __tablename__ = "judge_error_counts"
    __table_args__ = (UniqueConstraint("audit_id", "probe_id", "judge"),)
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(index=True, foreign_key="audit_runs.id")
    probe_id: str
    judge: str
    errors: int = 0


class Verdict(SQLModel, table=True):
    __tablename__ = "verdicts"
    id: int | None = Field(default=None, primary_key=True)
    audit_id: int = Field(unique=True, foreign_key="audit_runs.id")
    checkpoint_id: str = Field(index=True)
    outcome: str  # pass|warn|block|error
    policy: str
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))
    created_at: datetime = Field(default_factory=utcnow)
    # When the registry was last given this verdict; None: still to write (the daemon catches up).
    written_back_at: datetime | None = None
    policy_digest: str | None = None  # the policy version that decided it
