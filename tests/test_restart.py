"""Crash and shutdown in the middle of an audit: the daemon process is killed (SIGKILL) or
stopped (SIGTERM) while samples are being stored; the next start resumes the same audit, which
ends exactly once, with no duplicated or lost samples, and never passes by default."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import func
from sqlmodel import select

from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, Sample
from tests.conftest import wait_for, write_policy

# Enough batches that the audit is still running when we strike (154 items, batch 4).
SLOW_POLICY = """
name: slow
probes:
  text:
    - id: policy
      limit_per_category: 3
    - id: backdoor
      limit_per_category: 1
generation: {max_new_tokens: 16, batch_size: 4}
"""
EXPECTED = 11 * 3 + 11 * 11  # backdoor: one base prompt per category, plain + 10 triggers


def start(tmp_path, registry):
    env = dict(
        os.environ,
        AUDITD_HOME=str(tmp_path / "home"),
        AUDITD_REGISTRY_DIR=str(registry),
        AUDITD_POLICY=str(tmp_path / "slow.yaml"),
        AUDITD_METRICS_PORT="0",
        AUDITD_POLL_INTERVAL_S="0.3",
        AUDITD_REGISTRY_SETTLE_S="0",
        AUDITD_HEARTBEAT_TIMEOUT_S="600",
    )
    log = open(tmp_path / "daemon.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "auditd.cli", "run"], env=env, stdout=log, stderr=log)


def counts(engine):
    with session(engine) as s:
        runs = s.exec(select(AuditRun)).all()
        n = s.exec(select(func.count()).select_from(Sample)).one()
        distinct = s.exec(
            select(func.count()).select_from(
                select(Sample.audit_id, Sample.probe_id, Sample.item_index, Sample.variant).distinct().subquery()
            )
        ).one()
    return runs, n, distinct


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["crash", "sigterm"])
def test_audit_interrupted_mid_way_resumes_and_ends_exactly_once(tmp_path, tiny_model_dir, sig):
    write_policy(tmp_path, SLOW_POLICY, "slow")
    registry = tmp_path / "registry"
    registry.mkdir()
    shutil.copytree(tiny_model_dir, tmp_path / "staging")
    (tmp_path / "staging").rename(registry / "tiny")
    proc = start(tmp_path, registry)
    try:
        engine = open_db(f"sqlite:///{tmp_path}/home/auditd.db")  # migrates alongside the daemon: must not race
        wait_for(lambda: counts(engine)[1] >= 8, 120, interval=0.05, what="the first stored samples")
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        runs, stored, _ = counts(engine)
        assert len(runs) == 1 and 0 < stored < EXPECTED, "the strike must land mid-audit"
        if sig == signal.SIGTERM:
            assert rc == 0 and runs[0].status == "queued"  # a clean stop leaves it to resume
        else:
            assert runs[0].status == "running"  # a crash leaves it orphaned; recovery requeues it
        assert runs[0].outcome is None

        proc = start(tmp_path, registry)
        wait_for(lambda: counts(engine)[0][0].status not in ("queued", "running"), 300, what="the resumed audit")
        runs, stored, distinct = counts(engine)
        assert len(runs) == 1, "exactly one audit for the checkpoint"
        assert runs[0].status == "done" and runs[0].attempts == 2
        assert stored == distinct == EXPECTED
        time.sleep(1.0)  # a few more polls: nothing new is scheduled
        assert len(counts(engine)[0]) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    log = (tmp_path / "daemon.log").read_text()
    assert "requeued interrupted audits" in log or sig == signal.SIGTERM
