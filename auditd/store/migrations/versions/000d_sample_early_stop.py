"""samples: stopped early by two-stage generation, tokens generated; audit timings

Revision ID: 000d_sample_early_stop
Revises: 000c_audit_placement
"""

from alembic import op
import sqlalchemy as sa


revision = "000d_sample_early_stop"
down_revision = "000c_audit_placement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.add_column(sa.Column("early_stop", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("new_tokens", sa.Integer(), nullable=True))
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.add_column(sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.drop_column("timings")
    with op.batch_alter_table("samples") as batch_op:
        batch_op.drop_column("new_tokens")
        batch_op.drop_column("early_stop")
