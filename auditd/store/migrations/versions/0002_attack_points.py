"""attack points: the GRPO attack's evaluation curve

Revision ID: 0002_attack_points
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0002_attack_points"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attack_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("wall_s", sa.Float(), nullable=False),
        sa.Column("mean_reward", sa.Float(), nullable=True),
        sa.Column("step_rewards", sa.JSON(), nullable=True),
        sa.Column("harmful_rate", sa.Float(), nullable=True),
        sa.Column("n_heldout", sa.Integer(), nullable=False),
        sa.Column("n_judged", sa.Integer(), nullable=False),
        sa.Column("per_category", sa.JSON(), nullable=True),
        sa.Column("over_refusal_rate", sa.Float(), nullable=True),
        sa.Column("capability_retention", sa.Float(), nullable=True),
        sa.Column("judge_errors", sa.Integer(), nullable=False),
        sa.Column("peak_memory_gb", sa.Float(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audit_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("audit_id", "probe_id", "step"),
    )
    with op.batch_alter_table("attack_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attack_points_audit_id"), ["audit_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attack_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attack_points_audit_id"))
    op.drop_table("attack_points")
