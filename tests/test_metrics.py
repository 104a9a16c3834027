"""The /metrics exposition: cached per-model part invalidated by every change that matters."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from auditd.metrics.collector import build_registry
from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CategoryResult, CheckpointRow, Verdict, utcnow


def finished_audit(engine, cp_id, model, harmful, outcome):
    with session(engine) as s:
        s.add(CheckpointRow(id=cp_id, model=model, kind="text", source="t", path="/x"))
        s.commit()
        run = AuditRun(checkpoint_id=cp_id, status="done", outcome=outcome, finished_at=utcnow(), duration_s=3.0)
        s.add(run)
        s.commit()
        s.add(
            CategoryResult(
                audit_id=run.id,
                probe_id="policy",
                category="malware",
                n=10,
                n_judged=10,
                n_harmful=harmful,
                harmful_rate=harmful / 10,
                refusal_rate=1 - harmful / 10,
            )
        )
        s.add(Verdict(audit_id=run.id, checkpoint_id=cp_id, outcome=outcome, policy="p"))
        s.commit()
        return run.id


def values(body: bytes, name: str) -> dict:
    samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples if s.name == name]
    return {tuple(sorted(s.labels.items())): s.value for s in samples}


def test_rendered_exposition_equals_a_fresh_one_and_follows_new_audits_and_verdicts(tmp_path):
    engine = open_db(f"sqlite:///{tmp_path}/m.db")
    registry = build_registry(engine)
    finished_audit(engine, "sha256:a", "m", 1, "pass")
    first = registry.render()
    assert values(first, "auditd_category_harmful_rate") == {
        (("category", "malware"), ("model", "m"), ("probe", "policy")): 0.1
    }
    assert registry.render() == first  # unchanged database: the cached part is reused
    assert sorted(first.splitlines()) == sorted(generate_latest(registry).splitlines())

    audit_id = finished_audit(engine, "sha256:b", "m", 9, "block")  # a newer checkpoint of the model
    second = registry.render()
    assert (
        values(second, "auditd_category_harmful_rate")[(("category", "malware"), ("model", "m"), ("probe", "policy"))]
        == 0.9
    )
    assert values(second, "auditd_audits_total") == {
        (("outcome", "pass"),): 1,
        (("outcome", "warn"),): 0,
        (("outcome", "block"),): 1,
        (("outcome", "error"),): 0,
    }

    with session(engine) as s:  # a verdict decided again (its baseline finished later)
        v = s.query(Verdict).filter(Verdict.audit_id == audit_id).one()
        a = s.get(AuditRun, audit_id)
        v.outcome, v.created_at, a.outcome = "warn", utcnow(), "warn"
        s.add(v)
        s.add(a)
        s.commit()
    info = values(registry.render(), "auditd_latest_audit_info")
    assert info == {(("checkpoint", "sha256:b"), ("model", "m"), ("outcome", "warn"), ("policy_digest", "")): 1.0}
