"""Two real daemons (`auditd run`) on one private PostgreSQL server, sharing a registry folder. The
leader is killed with kill -9 right after checkpoints land (mid-poll) and while an audit of its own
runs (mid-audit), while more checkpoints keep landing, and one webhook event reaches both replicas
at once. Every checkpoint ends audited exactly once:
one audit, one verdict, one write-back, no sample stored twice, nothing passed; and the follower
takes over within two lease periods (the measured failover time is printed)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from auditd.registry.webhook import sign_generic
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, Sample
from tests.conftest import wait_for
from tests.pg_server import BIN, PgServer
from tests.reliability.procs import Daemon, add_checkpoint, integrity

LEASE_S = 1.0
POLICY = """
name: replicas
probes:
  text:
    - id: policy
      limit_per_category: 1
    - id: overrefusal
      limit_per_category: 2
backend: {id: "backend:fake", options: {mode: comply, latency_s: 0.4}}
generation: {max_new_tokens: 8, batch_size: 2}
budget: {audit_timeout_s: 120}
"""
ELECTED = re.compile(r"replica (\S+) is the leader now")
WRITTEN = re.compile(r"verdict \d+ of (\S+) written back")
SECRET = "replica-test-secret"


@pytest.fixture
def pg_url():
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/setup installs it)")
    server = PgServer(port_offset=7).start()
    try:
        yield server.url
    finally:
        server.destroy()


def _leads(d: Daemon) -> bool:
    return any(ELECTED.search(e.get("msg", "")) for e in d.log()[d.log_mark :])


def _failover(survivor: Daemon, killed: Daemon) -> float:
    """kill -9 the leader; seconds until the survivor logs that it leads."""
    survivor.log_mark = len(survivor.log())
    t0 = time.monotonic()
    killed.kill()
    wait_for(lambda: _leads(survivor), 10 * LEASE_S, interval=0.02, what="the survivor to take the lead")
    return time.monotonic() - t0


def _deliver_to_both(replicas: list[Daemon], hooks, tiny_model_dir) -> list[int]:
    """One webhook event, sent to every replica at once (a sender retrying against a load balancer)."""
    path = add_checkpoint(tiny_model_dir, hooks, "w1")
    body = json.dumps({"event_id": "evt-replicas-1", "model": "hooked", "path": str(path)}).encode()

    def send(d: Daemon) -> int:
        headers = {"Content-Type": "application/json", **sign_generic(SECRET, body)}
        return httpx.post(f"{d.url}/v1/hooks/registry", content=body, headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(len(replicas)) as pool:
        return list(pool.map(send, replicas))


def _own_running_audit(engine, d: Daemon) -> bool:
    with session(engine) as s:
        for a in s.exec(select(AuditRun).where(AuditRun.status == "running")).all():
            n = s.exec(select(func.count()).select_from(Sample).where(Sample.audit_id == a.id)).one()
            if a.worker and a.worker.endswith(f":{d.proc.pid}") and n >= 1:
                return True
    return False


@pytest.mark.slow
def test_replicas_audit_each_checkpoint_once_through_leader_kills(tmp_path, pg_url, tiny_model_dir):
    registry = tmp_path / "registry"
    registry.mkdir()
    policy = tmp_path / "replicas.yaml"
    policy.write_text(POLICY)
    hooks = tmp_path / "hooks"  # webhook checkpoints live outside the polled registry
    hooks.mkdir()
    env = {
        "AUDITD_DB_URL": pg_url,
        "AUDITD_LEADER_LEASE_S": str(LEASE_S),
        "AUDITD_LOG_LEVEL": "INFO",
        "AUDITD_WEBHOOK_SECRET": SECRET,
        "AUDITD_WEBHOOK_ROOTS": json.dumps([str(hooks)]),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = Daemon(tmp_path / "a", registry, policy, **env)
    b = Daemon(tmp_path / "b", registry, policy, **env)
    a.log_mark = b.log_mark = 0
    failovers = []
    try:
        a.start()
        wait_for(lambda: _leads(a), 30, what="the first replica to lead")
        b.start()
        engine = a.engine

        # Mid-poll: checkpoints land and the leader dies within the poll interval that finds them.
        add_checkpoint(tiny_model_dir, registry, "c1")
        add_checkpoint(tiny_model_dir, registry, "c2")
        failovers.append(_failover(b, a))
        add_checkpoint(tiny_model_dir, registry, "c3")
        a.log_mark = len(a.log())
        a.start()  # back as a follower
        codes = _deliver_to_both([a, b], hooks, tiny_model_dir)
        assert all(c in (200, 202, 409) for c in codes), codes

        # Mid-audit: the leader (b) dies while an audit it claimed has stored samples.
        add_checkpoint(tiny_model_dir, registry, "c4")
        wait_for(lambda: _own_running_audit(engine, b), 120, interval=0.1, what="the leader to run an audit")
        failovers.append(_failover(a, b))
        add_checkpoint(tiny_model_dir, registry, "c5")
        b.log_mark = len(b.log())
        b.start()

        wait_for(
            lambda: (
                integrity(engine)["checkpoints"] == 6
                and integrity(engine)["unfinished"] == 0
                and all(n == 1 for n in integrity(engine)["verdicts_per_checkpoint"])
            ),
            300,
            interval=0.5,
            what="every checkpoint's verdict",
        )
        # Let any stray second write-back (the failure this test looks for) happen before counting.
        time.sleep(3 * LEASE_S)
        result = integrity(engine)
        with session(engine) as s:
            audits = Counter(s.exec(select(AuditRun.checkpoint_id)).all())
            killed_audit = s.exec(select(func.max(AuditRun.attempts))).one()
            # Verdicts go back to the registry folder's checkpoints (a webhook's sender has no folder of ours).
            in_registry = sorted(s.exec(select(CheckpointRow.id).where(CheckpointRow.source != "webhook")).all())
            hooked = s.exec(select(CheckpointRow.id).where(CheckpointRow.source == "webhook")).all()
        writes = Counter(m.group(1) for d in (a, b) for e in d.log() if (m := WRITTEN.search(e.get("msg", ""))))
    finally:
        a.close()
        b.close()
    print(f"failover after kill -9 of the leader: {', '.join(f'{f:.2f} s' for f in failovers)} (lease {LEASE_S} s)")
    assert result["duplicates"] == 0 and result["false_passes"] == 0
    assert set(audits.values()) == {1}, audits  # each checkpoint audited once
    assert killed_audit == 2  # the audit killed with its leader resumed on the survivor
    assert len(in_registry) == 5 and len(hooked) == 1 and audits[hooked[0]] == 1
    assert sorted(writes) == in_registry and set(writes.values()) == {1}, writes
    assert all(f <= 2 * LEASE_S + 0.5 for f in failovers), failovers
