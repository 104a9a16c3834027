"""audit placement: where each audit runs (host, or Ray node)

Revision ID: 000c_audit_placement
Revises: 000b_policy_versions
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "000c_audit_placement"
down_revision = "000b_policy_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.add_column(sa.Column("placement", sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_runs") as batch_op:
        batch_op.drop_column("placement")
