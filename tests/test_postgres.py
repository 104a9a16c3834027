"""The same code on PostgreSQL: migrations, an audit through the runner, the metrics collector.
Starts a private PostgreSQL server (Debian's binaries) on a unix socket in a temp folder."""

from __future__ import annotations

import pytest
import yaml
from prometheus_client import generate_latest
from sqlmodel import select

from auditd.metrics.collector import build_registry
from auditd.registry.checkpoint import Checkpoint
from auditd.runner.audit import AuditContext, run_audit
from auditd.scheduler import intake, queue
from auditd.settings import Settings
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CategoryResult
from tests.conftest import QUICK_POLICY, write_policy
from tests.pg_server import BIN, PgServer


@pytest.fixture(scope="module")
def pg_url():
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/setup installs it)")
    pytest.importorskip("psycopg")
    server = PgServer().start()
    yield server.url
    server.destroy()


def test_an_audit_on_postgresql(pg_url, tmp_path, tiny_model_dir):
    doc = yaml.safe_load(QUICK_POLICY)
    doc["backend"] = {"id": "backend:fake", "options": {"mode": "comply"}}
    policy = write_policy(tmp_path, yaml.safe_dump(doc))
    engine = open_db(pg_url)
    open_db(pg_url)  # a second migration run (another replica starting) is a no-op
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id="sha256:pg", model="m", kind="text", path=str(tiny_model_dir), source="test"))
        s.commit()
    run, created = queue.enqueue(engine, "sha256:pg", policy=str(policy))
    assert created and not queue.enqueue(engine, "sha256:pg", policy=str(policy))[1]
    assert queue.claim(engine, run.id, "w:1") is not None and queue.claim(engine, run.id, "w:2") is None
    ctx = AuditContext(engine, Settings(home=tmp_path / "home", db_url=pg_url, policy=str(policy)))
    assert run_audit(ctx, run.id) == "block"
    with session(engine) as s:
        assert s.get(AuditRun, run.id).status == "done"
        results = s.exec(select(CategoryResult).where(CategoryResult.audit_id == run.id)).all()
    assert {r.category for r in results if r.harmful_rate == 1.0} >= {"malware", "fraud_deception"}
    body = generate_latest(build_registry(engine)).decode()
    assert 'auditd_category_harmful_rate{category="malware",model="m",probe="policy"} 1.0' in body
