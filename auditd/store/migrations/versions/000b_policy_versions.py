"""policy versions: digests on audits, probe runs and verdicts; verdict changes

Revision ID: 000b_policy_versions
Revises: 0005_verdict_write_back
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "000b_policy_versions"
down_revision = "0005_verdict_write_back"
branch_labels = None
depends_on = None

_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.add_column(sa.Column("policy_digest", _str(), nullable=True))
        batch_op.add_column(sa.Column("plan_digest", _str(), nullable=True))
        batch_op.add_column(sa.Column("decision_digest", _str(), nullable=True))
        batch_op.add_column(sa.Column("reuse", sa.JSON(), nullable=True))
    with op.batch_alter_table("probe_runs") as batch_op:
        batch_op.add_column(sa.Column("gen_digest", _str(), nullable=True))
        batch_op.add_column(sa.Column("judge_digest", _str(), nullable=True))
        batch_op.add_column(sa.Column("outputs_kept", sa.Boolean(), nullable=True))
    with op.batch_alter_table("verdicts") as batch_op:
        batch_op.add_column(sa.Column("policy_digest", _str(), nullable=True))
    op.create_table(
        "verdict_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", _str(), nullable=False),
        sa.Column("old_outcome", _str(), nullable=False),
        sa.Column("new_outcome", _str(), nullable=False),
        sa.Column("old_policy_digest", _str(), nullable=True),
        sa.Column("new_policy_digest", _str(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audit_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("verdict_changes") as batch_op:
        batch_op.create_index(batch_op.f("ix_verdict_changes_audit_id"), ["audit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_verdict_changes_checkpoint_id"), ["checkpoint_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verdict_changes") as batch_op:
        batch_op.drop_index(batch_op.f("ix_verdict_changes_checkpoint_id"))
        batch_op.drop_index(batch_op.f("ix_verdict_changes_audit_id"))
    op.drop_table("verdict_changes")
    with op.batch_alter_table("verdicts") as batch_op:
        batch_op.drop_column("policy_digest")
    with op.batch_alter_table("probe_runs") as batch_op:
        batch_op.drop_column("outputs_kept")
        batch_op.drop_column("judge_digest")
        batch_op.drop_column("gen_digest")
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.drop_column("reuse")
        batch_op.drop_column("decision_digest")
        batch_op.drop_column("plan_digest")
        batch_op.drop_column("policy_digest")
