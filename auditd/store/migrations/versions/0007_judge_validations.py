"""judge validations against human labels; degenerate answers per category

Revision ID: 0007_judge_validations
Revises: 0004_sample_judgement
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = "0007_judge_validations"
down_revision = "0004_sample_judgement"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judge_validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("judge", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("config_digest", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("gold", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("gold_digest", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("gold_format", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("task", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("kappa", sa.Float(), nullable=True),
        sa.Column("kappa_lo", sa.Float(), nullable=True),
        sa.Column("kappa_hi", sa.Float(), nullable=True),
        sa.Column("figures", sa.JSON(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("judge", "config_digest", "gold_digest"),
    )
    op.create_index("ix_judge_validations_judge", "judge_validations", ["judge"])
    op.create_index("ix_judge_validations_created_at", "judge_validations", ["created_at"])
    with op.batch_alter_table("category_results") as batch_op:
        batch_op.add_column(sa.Column("n_degenerate", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("degenerate_rate", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("category_results") as batch_op:
        batch_op.drop_column("degenerate_rate")
        batch_op.drop_column("n_degenerate")
    op.drop_index("ix_judge_validations_created_at", table_name="judge_validations")
    op.drop_index("ix_judge_validations_judge", table_name="judge_validations")
    op.drop_table("judge_validations")
