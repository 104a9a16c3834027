"""Alembic environment: runs migrations on the URL auditd passes in (no alembic.ini needed)."""

from alembic import context
from sqlmodel import SQLModel

import auditd.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
import auditd.store.hook_models  # noqa: F401  (webhook deliveries)
import auditd.store.drift_models  # noqa: F401  (per-category drift at verdict time)
import auditd.store.attack_models  # noqa: F401  (GRPO attack evaluation points)
import auditd.store.judge_models  # noqa: F401  (judge validations against human labels)
import auditd.store.version_models  # noqa: F401  (verdicts decided again under a new policy version)
from auditd.store.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Replicas starting together must not race on DDL; released at session end.
            connection.exec_driver_sql("SELECT pg_advisory_lock(7270681)")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),  # SQLite cannot ALTER most things in place
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
