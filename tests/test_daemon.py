"""The daemon end to end, in-process: registry folder -> scheduled audit -> judged, stored,
verdict written back, /metrics. Real SQLite, real tiny model via transformers, real HTTP."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from auditd.daemon import Daemon
from auditd.settings import Settings
from auditd.store.db import session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, Sample, Verdict
from tests.conftest import QUICK_POLICY, wait_for, write_policy


def drop(src, registry, rel):
    """Copy beside the registry, then rename in: the daemon never sees a half-copied folder."""
    staging = registry.parent / f".staging-{rel.replace('/', '-')}"
    shutil.copytree(src, staging)
    target = registry / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


@pytest.fixture
def daemon(tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    settings = Settings(
        home=tmp_path / "home",
        registry_dir=registry,
        policy=str(write_policy(tmp_path, QUICK_POLICY)),
        metrics_port=0,
        poll_interval_s=0.3,
        registry_settle_s=0,
    )
    d = Daemon(settings)
    d.start()
    yield d
    d.stop()


def audits(d):
    with session(d.engine) as s:
        return s.exec(
            select(AuditRun, CheckpointRow)
            .join(CheckpointRow, CheckpointRow.id == AuditRun.checkpoint_id)
            .order_by(AuditRun.id)
        ).all()


def finished(d, n):
    rows = audits(d)
    return rows if len(rows) >= n and all(a.status not in ("queued", "running") for a, _ in rows) else None


def test_dropped_checkpoint_is_audited_once_with_stored_results_and_metrics(daemon, tiny_model_dir, tmp_path):
    registry = daemon.settings.registry_dir
    ck = drop(tiny_model_dir, registry, "tiny/v1")
    [(audit, cp)] = wait_for(lambda: finished(daemon, 1), 120, what="the audit")
    assert audit.status == "done" and audit.outcome in ("pass", "warn", "block") and audit.attempts == 1
    assert cp.model == "tiny" and cp.kind == "text"
    with session(daemon.engine) as s:
        samples = s.exec(select(Sample).where(Sample.audit_id == audit.id)).all()
        results = s.exec(select(CategoryResult).where(CategoryResult.audit_id == audit.id)).all()
        verdict = s.exec(select(Verdict).where(Verdict.audit_id == audit.id)).one()
    assert len(samples) == 11 * 2 + 4  # limit_per_category 2 over 11 categories + 4 benign
    assert all(s.output for s in samples)  # real (if meaningless) text from the tiny model
    assert verdict.outcome == audit.outcome
    written = json.loads((ck / "auditd-verdict.json").read_text())
    assert written["outcome"] == audit.outcome and written["checkpoint"] == cp.id

    # Re-copying the same bytes elsewhere, or touching the folder, schedules nothing new.
    drop(tiny_model_dir, registry, "tiny-copy/v1")
    (ck / "config.json").touch()
    daemon.service.poll_sources()
    daemon.service.poll_sources()
    assert len(audits(daemon)) == 1

    # /metrics over HTTP, parsed with prometheus_client's own parser, agrees with the database.
    body = httpx.get(f"{daemon.http.url}/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    harm = {(s.labels["probe"], s.labels["category"]): s.value for s in fams["auditd_category_harmful_rate"].samples}
    assert {(r.probe_id, r.category): r.harmful_rate for r in results if r.harmful_rate is not None} == harm
    assert all(s.labels["model"] == "tiny" for s in fams["auditd_category_harmful_rate"].samples)
    total = {s.labels["outcome"]: s.value for s in fams["auditd_audits"].samples if s.name == "auditd_audits_total"}
    assert total[audit.outcome] == 1 and sum(total.values()) == 1
    benign = next(r for r in results if r.category == "benign")
    over = fams["auditd_over_refusal_rate"].samples
    assert [(s.labels["model"], s.value) for s in over] == [("tiny", benign.n_refused / benign.n)]
    count = next(s.value for s in fams["auditd_audit_duration_seconds"].samples if s.name.endswith("_count"))
    assert count == 1
    queue = next(s.value for s in fams["auditd_queue_depth"].samples)
    assert queue == 0
    info = fams["auditd_latest_audit_info"].samples
    assert [(s.labels["model"], s.labels["checkpoint"], s.labels["outcome"]) for s in info] == [
        ("tiny", cp.id, audit.outcome)
    ]
    assert httpx.get(f"{daemon.http.url}/readyz").json()["ready"] is True


def test_corrupt_and_pickle_checkpoints_end_as_stored_errors_and_the_daemon_goes_on(daemon, tiny_model_dir):
    registry = daemon.settings.registry_dir
    staging = registry.parent / "bad"
    shutil.copytree(tiny_model_dir, staging)
    weights = staging / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated in transit
    staging.rename(registry / "corrupt")

    pickled = registry.parent / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    pickled.rename(registry / "pickled")

    rows = wait_for(lambda: finished(daemon, 2), 120, what="both audits")
    by_model = {cp.model: a for a, cp in rows}
    for name, needle in (("corrupt", "corrupt"), ("pickled", "pickle")):
        a = by_model[name]
        assert a.status == "error" and a.outcome == "error"
        assert needle in a.error.lower() and "\n" not in a.error
        verdict_file = registry / name / "auditd-verdict.json"  # written back just after the status is final
        wait_for(verdict_file.exists, 30, what=f"{name}'s verdict file")
        verdict = json.loads(verdict_file.read_text())
        assert verdict["outcome"] == "error" and needle in verdict["reasons"][0]["message"].lower()

    drop(tiny_model_dir, registry, "good")  # the daemon keeps working after bad input
    rows = wait_for(lambda: finished(daemon, 3), 120, what="the good audit")
    assert {cp.model: a.status for a, cp in rows}["good"] == "done"
    body = httpx.get(f"{daemon.http.url}/metrics").text
    assert 'auditd_audits_total{outcome="error"} 2.0' in body
