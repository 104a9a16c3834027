"""verdicts: when the registry was given the verdict (a crash before the write-back is caught up)

Revision ID: 0005_verdict_write_back
Revises: 0008_cascade_routing
"""

from alembic import op
import sqlalchemy as sa


revision = "0005_verdict_write_back"
down_revision = "0008_cascade_routing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verdicts") as batch_op:
        batch_op.add_column(sa.Column("written_back_at", sa.DateTime(), nullable=True))
    # Verdicts decided before this revision were written back by the process that decided them.
    op.execute(sa.text("UPDATE verdicts SET written_back_at = created_at"))


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch_op:
        batch_op.drop_column("written_back_at")
