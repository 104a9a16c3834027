"""The same code on PostgreSQL: migrations, an audit through the runner, the metrics collector.
Starts a private PostgreSQL server (Debian's binaries) on a unix socket in a temp folder."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from sqlmodel import select

from auditd.metrics.collector import build_registry
from auditd.registry.checkpoint import Checkpoint
from auditd.runner.audit import AuditContext, run_audit
from auditd.scheduler import queue
from auditd.settings import Settings
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CategoryResult
from tests.conftest import QUICK_POLICY, write_policy

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(cmd):
    # initdb refuses to run as root; CI runs as root, developers usually not.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/setup installs it)")
    pytest.importorskip("psycopg")
    bindir = BIN[-1]
    # Not under pytest's tmp dir: that is private to our user and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="auditd-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "auditd"]),
                   check=True, capture_output=True)
    port = 5400 + os.getpid() % 500
    opts = f"-c listen_addresses='' -k {sock} -p {port} -c fsync=off"
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-o", opts, "-w", "start", "-l",
                                 str(root / "log")]), check=True, capture_output=True)
    yield f"postgresql+psycopg://auditd@/postgres?host={sock}&port={port}"
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_an_audit_on_postgresql(pg_url, tmp_path, tiny_model_dir):
    doc = yaml.safe_load(QUICK_POLICY)
    doc["backend"] = {"id": "backend:fake", "options": {"mode": "comply"}}
    policy = write_policy(tmp_path, yaml.safe_dump(doc))
    engine = open_db(pg_url)
    open_db(pg_url)  # a second migration run (another replica starting) is a no-op
    with session(engine) as s:
        queue.ingest(s, Checkpoint(id="sha256:pg", model="m", kind="text", path=str(tiny_model_dir), source="test"))
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
