"""An audit interrupted `max_attempts` times is given up like any failed audit: an error verdict
row, the verdict JSON written back beside the checkpoint, auditd_audits_total{outcome="error"}.
The policy's budget.max_attempts, when it sets one, wins over the AUDITD_MAX_ATTEMPTS setting."""

from __future__ import annotations

import json
import shutil

import httpx
import yaml
from sqlmodel import select

from auditd.daemon import Daemon
from auditd.registry.checkpoint import Checkpoint
from auditd.registry.digest import content_digest
from auditd.scheduler import intake, queue
from auditd.settings import Settings
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, Verdict
from tests.conftest import QUICK_POLICY, wait_for, write_policy


def interrupted_audit(settings: Settings, folder, attempts: int) -> int:
    """The state a crash loop leaves: the checkpoint's audit queued again after `attempts` tries."""
    engine = open_db(settings.database_url)
    digest = content_digest(folder)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id=digest, model="m", kind="text", path=str(folder), source="dir"))
        s.commit()
    run, _ = queue.enqueue(engine, digest, policy=settings.policy)
    with session(engine) as s:
        a = s.get(AuditRun, run.id)
        a.attempts = attempts
        s.add(a)
        s.commit()
    engine.dispose()
    return run.id


def test_given_up_audit_gets_an_error_verdict_written_back_and_counted(tmp_path, tiny_model_dir):
    doc = yaml.safe_load(QUICK_POLICY)
    doc["backend"] = {"id": "backend:fake", "options": {"mode": "refuse"}}
    doc["budget"] = {"max_attempts": 2}  # wins over the setting below
    registry = tmp_path / "registry"
    folder = registry / "m"
    shutil.copytree(tiny_model_dir, folder)
    settings = Settings(
        home=tmp_path / "home",
        registry_dir=registry,
        metrics_port=0,
        poll_interval_s=0.3,
        registry_settle_s=0,
        max_attempts=5,
        executor="inline",
        policy=str(write_policy(tmp_path, yaml.safe_dump(doc))),
    )
    audit_id = interrupted_audit(settings, folder, attempts=2)
    d = Daemon(settings)
    d.start()
    try:
        audit = wait_for(lambda: (a := d_audit(d, audit_id)).status != "queued" and a, 30, what="the give-up")
        with session(d.engine) as s:
            verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).one()
        assert audit.status == "error" and audit.outcome == "error" and audit.attempts == 2
        assert verdict.outcome == "error" and "gave up after 2 interrupted attempts" in verdict.reasons[0]["message"]
        written = wait_for(
            lambda: (
                (folder / "auditd-verdict.json").exists() and json.loads((folder / "auditd-verdict.json").read_text())
            ),
            10,
            what="the write-back",
        )
        assert written["outcome"] == "error" and written["audit_id"] == audit_id
        body = httpx.get(f"{d.http.url}/metrics").text
        assert 'auditd_audits_total{outcome="error"} 1.0' in body
        assert d.service.max_attempts(settings.policy) == 2
    finally:
        d.stop()


def test_the_setting_applies_when_the_policy_sets_no_max_attempts(tmp_path):
    policy = write_policy(tmp_path, QUICK_POLICY)
    d = Daemon(Settings(home=tmp_path / "home", policy=str(policy), metrics_port=0, max_attempts=5))
    try:
        assert d.service.max_attempts(str(policy)) == 5
        assert d.service.max_attempts("no-such-policy") == 5
    finally:
        d.engine.dispose()


def d_audit(d: Daemon, audit_id: int) -> AuditRun:
    with session(d.engine) as s:
        return s.get(AuditRun, audit_id)
