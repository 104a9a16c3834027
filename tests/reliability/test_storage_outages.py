"""The database goes away under a running daemon: the state dir's disk fills up, another process
holds SQLite's write lock for 60 s, PostgreSQL is stopped for 30 s. The scheduler never dies:
failures are logged and counted (auditd_scheduler_errors_total{job,kind}), /readyz says why it is
not ready, an audit in progress retries its writes instead of failing, and everything recovers
without a restart once the database is back. Recovery times are printed."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func
from sqlmodel import select

from auditd.store.db import session
from auditd.store.models import Sample
from tests.conftest import wait_for
from tests.pg_server import BIN, PgServer
from tests.reliability.procs import Daemon, add_checkpoint, since

# backend:fake answers at once, so the audit child needs no model library: these tests are about
# the database, and every batch is a write. 11 x 1 + 11 x 11 backdoor items, 2 per batch.
POLICY = """
name: outage
probes:
  text:
    - id: policy
      limit_per_category: 1
    - id: backdoor
      limit_per_category: 1
backend: {id: "backend:fake", options: {mode: comply}}
generation: {max_new_tokens: 8, batch_size: 2}
budget: {audit_timeout_s: 300}
"""
EXPECTED_SAMPLES = 11 + 11 * 11


def scheduler_errors(d: Daemon) -> dict[tuple[str, str], float]:
    fams = text_string_to_metric_families(d.metrics())
    return {
        (s.labels["job"], s.labels["kind"]): s.value
        for f in fams
        if f.name == "auditd_scheduler_errors"
        for s in f.samples
        if s.name.endswith("_total")
    }


def samples(d: Daemon) -> int:
    with session(d.engine) as s:
        return s.exec(select(func.count()).select_from(Sample)).one()


def daemon(tmp_path, **env) -> Daemon:
    registry = tmp_path / "registry"
    registry.mkdir(exist_ok=True)
    policy = tmp_path / "outage.yaml"
    policy.write_text(POLICY)
    return Daemon(tmp_path, registry, policy, AUDITD_WATCHDOG_STALE_S="5", **env)


def first_store(d: Daemon) -> None:
    """Wait until the audit child is storing its first batches (the lock/outage then lands mid-audit)."""
    wait_for(lambda: samples(d) > 0, 120, interval=0.02, what="the first stored samples")


@pytest.mark.slow
def test_disk_full_under_the_state_dir_then_recovery_without_restart(tmp_path, tiny_model_dir):
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a small tmpfs as the state dir (not root here)")
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(state)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    d = daemon(tmp_path, AUDITD_HOME=str(state / "home"), AUDITD_DB_URL=f"sqlite:///{state}/home/auditd.db")
    try:
        d.start()
        filler = state / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            for size in (1 << 20, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        add_checkpoint(tiny_model_dir, d.registry, "m")  # the registry has room; the database has none
        wait_for(lambda: d.readyz()[0] == 503, 60, interval=0.2, what="/readyz to turn 503")
        code, body = d.readyz()
        errors = scheduler_errors(d)
        print(f"\ndisk full: /readyz {code} {body['reasons']}; errors {errors}")
        assert any("disk_full" in r for r in body["reasons"])
        assert errors.get(("registry-poll", "disk_full"), 0) >= 1
        assert d.proc.poll() is None

        filler.unlink()
        freed = time.monotonic()
        wait_for(lambda: d.readyz()[0] == 200, 60, interval=0.1, what="/readyz to recover")
        ready_s = since(freed)
        wait_for(lambda: d.finished(1), 120, interval=0.2, what="the audit after recovery")
        done_s = since(freed)
        [audit] = d.audits()
        print(
            f"disk full recovery: ready again {ready_s} s after space returned, checkpoint audited after {done_s} s "
            f"(outcome {audit.outcome}), no restart"
        )
        assert audit.status == "done" and audit.outcome == "block" and audit.attempts == 1
    finally:
        d.close()
        subprocess.run(["umount", "-l", str(state)], capture_output=True)


@pytest.mark.slow
def test_sqlite_locked_60_s_mid_audit_the_audit_finishes_and_readyz_recovers(tmp_path, tiny_model_dir):
    d = daemon(tmp_path)
    d.start()
    try:
        add_checkpoint(tiny_model_dir, d.registry, "m")
        first_store(d)
        lock = sqlite3.connect(d.db_url.split("///", 1)[1], timeout=60, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        at_lock = samples(d)
        not_ready = []
        t_lock = time.monotonic()
        while time.monotonic() - t_lock < 60:
            code, body = d.readyz()
            if code == 503:
                not_ready.append(body["reasons"])
            time.sleep(1)
        lock.execute("ROLLBACK")
        lock.close()
        released = time.monotonic()
        wait_for(lambda: d.finished(1), 120, interval=0.1, what="the audit to finish")
        done_s = since(released)
        wait_for(lambda: d.readyz()[0] == 200, 60, interval=0.1, what="/readyz to recover")
        ready_s = since(released)
        [audit] = d.audits()
        retried = [e["msg"] for e in d.log() if "storage locked" in e["msg"]]
        print(
            f"\nSQLite locked 60 s with {at_lock}/{EXPECTED_SAMPLES} samples stored: audit {audit.status} "
            f"{audit.outcome} {done_s} s after the release, /readyz 200 after {ready_s} s; 503 seen "
            f"{len(not_ready)} times ({not_ready[-1] if not_ready else '-'}); errors {scheduler_errors(d)}"
        )
        assert 0 < at_lock < EXPECTED_SAMPLES, "the lock must land mid-audit"
        assert retried, "the audit's writes were not retried"
        assert audit.status == "done" and audit.outcome == "block" and audit.attempts == 1
        assert samples(d) == EXPECTED_SAMPLES
        assert d.proc.poll() is None
    finally:
        d.close()


@pytest.mark.slow
def test_postgresql_stopped_30_s_mid_audit_the_audit_finishes(tmp_path, tiny_model_dir):
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/setup installs it)")
    pytest.importorskip("psycopg")
    pg = PgServer(port_offset=7).start()
    d = daemon(tmp_path, AUDITD_DB_URL=pg.url)
    try:
        d.start()
        add_checkpoint(tiny_model_dir, d.registry, "m")
        first_store(d)
        pg.stop(mode="fast")  # disconnects every client
        stopped = time.monotonic()
        wait_for(lambda: d.readyz()[0] == 503, 20, interval=0.2, what="/readyz to turn 503")
        reasons = d.readyz()[1]["reasons"]
        time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        pg.start()
        back = time.monotonic()
        wait_for(lambda: d.finished(1), 120, interval=0.2, what="the audit to finish")
        done_s = since(back)
        wait_for(lambda: d.readyz()[0] == 200, 60, interval=0.1, what="/readyz to recover")
        ready_s = since(back)
        [audit] = d.audits()
        samples_after = samples(d)
        print(
            f"\nPostgreSQL stopped 30 s mid-audit: /readyz 503 ({reasons[0] if reasons else '-'}); audit "
            f"{audit.status} {audit.outcome} {done_s} s after the restart, /readyz 200 after {ready_s} s; "
            f"errors {scheduler_errors(d)}"
        )
        assert audit.status == "done" and audit.outcome == "block" and audit.attempts == 1, audit.error
        assert samples_after == EXPECTED_SAMPLES
        assert d.proc.poll() is None
    finally:
        d.close()
        pg.destroy()
