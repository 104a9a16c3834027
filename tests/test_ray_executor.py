"""Executor `ray` on a real local Ray cluster (`ray start --head`, 2 CPUs, stopped by pid): audits of
a tiny model run as Ray tasks that write to the store themselves; a worker killed mid-audit gets
its audit requeued and resumed from the stored samples, with no duplicate and one verdict."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from sqlalchemy import func
from sqlmodel import select

from auditd.registry.checkpoint import Checkpoint
from auditd.scheduler import intake, queue
from auditd.settings import Settings
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, Sample, Verdict
from tests.conftest import QUICK_POLICY, wait_for, write_policy

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    from tests.ray_cluster import AUTH_ENV, RayCluster

    saved = {k: os.environ.get(k) for k in AUTH_ENV}
    os.environ.update(AUTH_ENV)  # the driver (this process) as the cluster
    c = RayCluster(num_cpus=2).start()
    try:
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _policy(tmp_path, latency_s: float):
    doc = yaml.safe_load(QUICK_POLICY)
    doc["backend"] = {"id": "backend:fake", "options": {"mode": "comply", "latency_s": latency_s}}
    doc["generation"]["batch_size"] = 2
    return write_policy(tmp_path, yaml.safe_dump(doc))


def _service(tmp_path, cluster, policy, ids, model_dir):
    from auditd.runner.audit import AuditContext
    from auditd.scheduler.service import AuditService

    settings = Settings(
        home=tmp_path / "home", policy=str(policy), executor="ray", ray_address=cluster.address, max_attempts=3
    )
    engine = open_db(settings.database_url)
    with session(engine) as s:
        for cid in ids:
            intake.ingest(s, Checkpoint(id=cid, model="m", kind="text", path=str(model_dir), source="test"))
        s.commit()
    runs = [queue.enqueue(engine, cid, policy=str(policy))[0].id for cid in ids]
    return AuditService(engine, settings, [], AuditContext(engine, settings)), engine, runs


def _samples(engine, audit_id=None):
    with session(engine) as s:
        q = select(func.count()).select_from(Sample)
        if audit_id is not None:
            q = q.where(Sample.audit_id == audit_id)
        n = s.exec(q).one()
        distinct = s.exec(
            select(func.count()).select_from(
                select(Sample.audit_id, Sample.probe_id, Sample.item_index, Sample.variant).distinct().subquery()
            )
        ).one()
    return n, distinct


@pytest.mark.slow
def test_a_ray_worker_killed_mid_audit_is_requeued_and_resumed(tmp_path, cluster, tiny_model_dir):
    policy = _policy(tmp_path, latency_s=0.4)
    svc, engine, (first, second) = _service(tmp_path, cluster, policy, ["sha256:ray1", "sha256:ray2"], tiny_model_dir)
    svc.start()
    try:
        # One slot: the audit running when we strike is the first one.
        wait_for(lambda: _samples(engine, first)[0] >= 2, 120, what="the first audit to store samples on Ray")
        victims = cluster.workers("auditd-audit")
        assert len(victims) == 1, victims
        before = _samples(engine, first)[0]
        os.kill(victims[0], signal.SIGKILL)
        wait_for(
            lambda: all(a.status == "done" for a in _audits(engine)), 180, interval=0.5, what="both audits to finish"
        )
    finally:
        svc.stop(wait=True)
    audits = {a.id: a for a in _audits(engine)}
    assert audits[first].attempts == 2 and audits[second].attempts == 1
    assert all(a.placement and a.placement.startswith("ray:") for a in audits.values())
    n, distinct = _samples(engine)
    assert n == distinct, "a sample was stored twice"
    # The resumed audit kept what it had and stored exactly the rest: the same set as the untouched one.
    assert _samples(engine, first)[0] == _samples(engine, second)[0] > before
    with session(engine) as s:
        verdicts = s.exec(select(Verdict)).all()
    assert sorted(v.audit_id for v in verdicts) == [first, second]
    assert {v.outcome for v in verdicts} == {"block"}  # the fake model complies: never a pass


@pytest.mark.slow
def test_metrics_show_audits_per_node_and_the_clusters_gpus(tmp_path, cluster, tiny_model_dir):
    from prometheus_client import generate_latest

    from auditd.metrics.collector import build_registry

    policy = _policy(tmp_path, latency_s=0.5)
    svc, engine, (audit_id,) = _service(tmp_path, cluster, policy, ["sha256:ray3"], tiny_model_dir)
    svc.start()
    try:
        wait_for(lambda: _samples(engine, audit_id)[0] >= 1, 120, what="the audit to run on Ray")
        state = {"tick": 0, "replica": svc.worker, "leader": svc.leader.is_leader}
        body = generate_latest(build_registry(engine, lambda: state)).decode()
    finally:
        svc.stop(wait=True)
    assert 'auditd_audits_running_by_placement{placement="ray:' in body
    assert f'auditd_cluster_gpus{{replica="{svc.worker}"}} 0.0' in body
    assert f'auditd_replica_leader{{replica="{svc.worker}"}} 1.0' in body


@pytest.mark.slow
def test_an_audit_past_its_deadline_on_ray_ends_in_error_and_its_task_is_killed(tmp_path, cluster, tiny_model_dir):
    import time

    doc = yaml.safe_load(_policy(tmp_path, latency_s=1.0).read_text())
    doc["budget"] = {"audit_timeout_s": 6}
    policy = write_policy(tmp_path, yaml.safe_dump(doc), "deadline")
    svc, engine, (audit_id,) = _service(tmp_path, cluster, policy, ["sha256:ray4"], tiny_model_dir)
    svc.start()
    try:
        wait_for(
            lambda: _audits(engine)[0].status not in ("queued", "running"),
            90,
            interval=0.2,
            what="the deadline to end the audit",
        )
    finally:
        svc.stop(wait=True)
    audit = _audits(engine)[0]
    assert (audit.status, audit.outcome) == ("error", "error") and "6" in audit.error
    deadline = time.monotonic() + 20
    while cluster.workers("auditd-audit") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not cluster.workers("auditd-audit"), "the task outlived its deadline"
    with session(engine) as s:
        assert len(s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).all()) == 1


@pytest.mark.slow
def test_sqlite_refuses_a_cluster_with_a_node_on_another_host(tmp_path):
    from auditd.daemon import Daemon
    from auditd.runner.ray_executor import RayConfigError
    from tests.ray_cluster import RayCluster

    if ray.is_initialized():
        ray.shutdown()  # the module's cluster: this test joins its own
    two = RayCluster(num_cpus=1).start()
    try:
        two.add_node("127.0.0.2")  # this host, but the cluster cannot know: it reports another address
        settings = Settings(home=tmp_path / "home", executor="ray", ray_address=two.address)
        with pytest.raises(RayConfigError, match=r"with SQLite needs every Ray node on this host .*127\.0\.0\.2"):
            Daemon(settings)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        two.stop()


def _audits(engine) -> list[AuditRun]:
    with session(engine) as s:
        return s.exec(select(AuditRun).order_by(AuditRun.id)).all()


def test_task_resources_follow_the_settings():
    from auditd.runner.ray_executor import task_options

    s = Settings(executor="ray", ray_num_cpus=2, ray_memory_mb=1024, ray_resources="accelerator_type:H100=0.01")
    opts = task_options(s, "cuda")
    assert (opts["num_cpus"], opts["num_gpus"], opts["memory"]) == (2, 1, 1024 * 2**20)
    assert opts["resources"] == {"accelerator_type:H100": 0.01} and opts["max_retries"] == 0
    assert task_options(Settings(), "cpu")["num_gpus"] == 0
    assert task_options(Settings(ray_num_gpus=0.5), "cuda")["num_gpus"] == 0.5
    # A policy's budget.resources wins over the settings, field by field; custom resources merge.
    from auditd.policy.model import Resources

    grpo = Resources(num_gpus=2, memory_mb=4096, custom={"accelerator_type:A100": 0.01})
    opts = task_options(s, "cuda", grpo)
    assert (opts["num_cpus"], opts["num_gpus"], opts["memory"]) == (2, 2, 4096 * 2**20)
    assert opts["resources"] == {"accelerator_type:H100": 0.01, "accelerator_type:A100": 0.01}
    with pytest.raises(ValueError, match="RAY_RESOURCES: bad entry"):
        _ = Settings(ray_resources="GPU_A100").ray_resource_map
    with pytest.raises(ValueError, match="RAY_RESOURCES: bad entry"):
        _ = Settings(ray_resources="x=-1").ray_resource_map


def test_the_daemon_does_not_import_ray_unless_it_is_the_executor(tmp_path):
    code = (
        "import sys; from auditd.daemon import Daemon; from auditd.settings import Settings; "
        f"d = Daemon(Settings(home={str(tmp_path)!r})); print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
