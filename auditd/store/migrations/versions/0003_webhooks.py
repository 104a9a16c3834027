"""webhook deliveries and per-category drift

Revision ID: 0003_webhooks
Revises: 0002_attack_points
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0003_webhooks"
down_revision = "0002_attack_points"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("checkpoint_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("audit_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "event_id"),
    )
    op.create_table(
        "category_drift",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("baseline_audit_id", sa.Integer(), nullable=False),
        sa.Column("probe_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("metric", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("base_rate", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("p_value", sa.Float(), nullable=False),
        sa.Column("significant", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["audit_id"], ["audit_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("audit_id", "probe_id", "category", "metric"),
    )
    with op.batch_alter_table("category_drift", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_category_drift_audit_id"), ["audit_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("category_drift", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_category_drift_audit_id"))
    op.drop_table("category_drift")
    op.drop_table("webhook_deliveries")
