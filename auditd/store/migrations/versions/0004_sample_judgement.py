"""samples: degenerate answers and the judge that decided

Revision ID: 0004_sample_judgement
Revises: 0003_webhooks
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0004_sample_judgement"
down_revision = "0003_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.add_column(sa.Column("degenerate", sa.Boolean(), nullable=True))
        batch_op.add_column(
            sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.drop_column("decided_by")
        batch_op.drop_column("degenerate")
