"""samples: whether judge:cascade escalated, and whether its two judges agreed

Revision ID: 0008_cascade_routing
Revises: 0007_judge_validations
"""

from alembic import op
import sqlalchemy as sa


revision = "0008_cascade_routing"
down_revision = "0007_judge_validations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.add_column(sa.Column("escalated", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("judges_agree", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch_op:
        batch_op.drop_column("judges_agree")
        batch_op.drop_column("escalated")
