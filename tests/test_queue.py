"""The audit queue: priorities, device pinning, atomic claims, giving up, orphan recovery."""

from __future__ import annotations

from datetime import timedelta

from auditd.registry.checkpoint import Checkpoint
from auditd.scheduler import intake, queue
from auditd.settings import Settings
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, utcnow


def engine_with(tmp_path, n):
    engine = open_db(f"sqlite:///{tmp_path}/q.db")
    with session(engine) as s:
        for i in range(n):
            intake.ingest(s, Checkpoint(id=f"sha256:{i}", model="m", kind="text", path="/x", source="t"))
        s.commit()
    return engine


def test_priority_then_age_and_device_pinning(tmp_path):
    engine = engine_with(tmp_path, 4)
    low, _ = queue.enqueue(engine, "sha256:0", priority=0)
    high, _ = queue.enqueue(engine, "sha256:1", priority=5)
    pinned, _ = queue.enqueue(engine, "sha256:2", priority=9, device="cuda:1")
    later, _ = queue.enqueue(engine, "sha256:3", priority=5)
    again, created = queue.enqueue(engine, "sha256:1", priority=5)
    assert again.id == high.id and not created  # idempotent per (checkpoint, request key)
    order = [queue.claim_next(engine, "cuda:0", "w:1", 3) for _ in range(4)]
    assert [r.id if r else None for r in order] == [high.id, later.id, low.id, None]
    assert all(r.device == "cuda:0" for r in order[:3])  # "any" audits take the claiming device
    got = queue.claim_next(engine, "cuda:1", "w:1", 3)
    assert got.id == pinned.id and queue.claim(engine, pinned.id, "w:2") is None  # no double claim


def test_interrupted_too_often_is_given_up_as_error(tmp_path):
    engine = engine_with(tmp_path, 1)
    run, _ = queue.enqueue(engine, "sha256:0")
    with session(engine) as s:
        a = s.get(AuditRun, run.id)
        a.attempts = 3
        s.add(a)
        s.commit()
    assert queue.claim_next(engine, "cpu", "w:1", max_attempts=3) is None
    with session(engine) as s:
        a = s.get(AuditRun, run.id)
    assert a.status == "error" and a.outcome == "error" and "3 interrupted attempts" in a.error


def test_recovery_requeues_dead_or_silent_workers_only(tmp_path):
    engine = engine_with(tmp_path, 3)
    ids = [queue.enqueue(engine, f"sha256:{i}")[0].id for i in range(3)]
    for i, worker in zip(ids, ["otherhost:1", f"{queue.worker_id().rsplit(':', 1)[0]}:999999", "otherhost:2"]):
        queue.claim(engine, i, worker, "cpu")
    with session(engine) as s:  # the first one's heartbeat is stale, the third's is fresh
        a = s.get(AuditRun, ids[0])
        a.heartbeat_at = utcnow() - timedelta(hours=1)
        s.add(a)
        s.commit()
    assert sorted(queue.recover(engine, heartbeat_timeout_s=60)) == [ids[0], ids[1]]  # stale; dead pid here
    with session(engine) as s:
        assert s.get(AuditRun, ids[2]).status == "running"


def test_devices_setting():
    assert Settings(devices="cuda:0=1, cuda:1=2").device_slots_map == {"cuda:0": 1, "cuda:1": 2}
    assert Settings(device="cuda", device_slots=3).device_slots_map == {"cuda": 3}
