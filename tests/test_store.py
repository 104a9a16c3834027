"""The schema comes from alembic migrations; constraints that keep audits exactly-once hold."""

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CheckpointRow, Sample


def test_migrations_create_every_table(tmp_path):
    from sqlmodel import SQLModel

    engine = open_db(f"sqlite:///{tmp_path}/a.db")
    tables = set(inspect(engine).get_table_names())
    assert {
        "models",
        "checkpoints",
        "audit_runs",
        "probe_runs",
        "samples",
        "judge_scores",
        "category_results",
        "verdicts",
        "registry_entries",
        "alembic_version",
    } <= tables
    # every sqlmodel table is created by a migration (a table only in code would break PostgreSQL installs)
    assert set(SQLModel.metadata.tables) <= tables
    with engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_migrating_twice_is_a_no_op(tmp_path):
    url = f"sqlite:///{tmp_path}/a.db"
    open_db(url)
    engine = open_db(url)
    with engine.connect() as c:
        heads = c.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    assert heads


def test_a_sample_key_cannot_be_stored_twice(tmp_path):
    engine = open_db(f"sqlite:///{tmp_path}/a.db")
    with session(engine) as s:
        s.add(CheckpointRow(id="sha256:x", model="m", kind="text", source="dir", path="/x"))
        s.commit()
        s.add(AuditRun(checkpoint_id="sha256:x"))
        s.commit()
        s.add(Sample(audit_id=1, probe_id="p", item_index=0, category="c", prompt="a", output="b"))
        s.commit()
        s.add(Sample(audit_id=1, probe_id="p", item_index=0, category="c", prompt="a", output="b"))
        with pytest.raises(IntegrityError):
            s.commit()


def test_migrations_are_one_linear_history_that_downgrades_cleanly(tmp_path):
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect as sa_inspect

    from auditd.store.db import alembic_config, make_engine

    url = f"sqlite:///{tmp_path}/a.db"
    cfg = alembic_config(url)
    assert len(ScriptDirectory.from_config(cfg).get_heads()) == 1, "merge migration branches into one head"
    open_db(url)
    command.downgrade(cfg, "base")
    assert set(sa_inspect(make_engine(url)).get_table_names()) <= {"alembic_version", "apscheduler_jobs"}
