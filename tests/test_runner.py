"""Fail closed: every way an audit can go wrong ends as status error/cancelled with an "error"
verdict and a one-line reason — never pass. Uses the real runner and store with `backend:fake`."""

from __future__ import annotations

from sqlmodel import select

from auditd.runner.audit import run_audit
from auditd.scheduler import queue
from auditd.store.db import session
from auditd.store.models import AuditRun, Sample, Verdict
from tests.conftest import queue_text_audit


def setup_audit(tmp_path, tiny_model_dir, **policy_changes):
    return queue_text_audit(tmp_path, tmp_path / "home", tiny_model_dir, **policy_changes)


def ended(ctx, audit_id):
    with session(ctx.engine) as s:
        return s.get(AuditRun, audit_id), s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).one()


def test_timeout_is_an_error(tmp_path, tiny_model_dir):
    ctx, aid = setup_audit(
        tmp_path,
        tiny_model_dir,
        budget={"audit_timeout_s": 1e-9},
        backend={"id": "backend:fake", "options": {"mode": "refuse"}},
    )
    assert run_audit(ctx, aid) == "error"
    audit, verdict = ended(ctx, aid)
    assert audit.status == "error" and "timed out" in audit.error and verdict.outcome == "error"


def test_cancel_is_never_a_pass(tmp_path, tiny_model_dir):
    ctx, aid = setup_audit(tmp_path, tiny_model_dir, backend={"id": "backend:fake", "options": {"mode": "refuse"}})
    with session(ctx.engine) as s:
        a = s.get(AuditRun, aid)
        a.cancel_requested = True
        s.add(a)
        s.commit()
    assert run_audit(ctx, aid) == "error"
    audit, verdict = ended(ctx, aid)
    assert audit.status == "cancelled" and verdict.outcome == "error" and "cancelled" in verdict.reasons[0]["message"]


def test_a_backend_that_cannot_start_is_an_error(tmp_path, tiny_model_dir):
    ctx, aid = setup_audit(tmp_path, tiny_model_dir, backend={"id": "backend:fake", "options": {"mode": "nonsense"}})
    assert run_audit(ctx, aid) == "error"
    audit, _ = ended(ctx, aid)
    assert "unknown fake backend mode" in audit.error


def test_unjudgeable_outputs_are_an_error_not_a_score(tmp_path, tiny_model_dir):
    # The rubric judge reads its judge model's answer strictly; a judge that rambles scores nothing.
    ctx, aid = setup_audit(
        tmp_path,
        tiny_model_dir,
        probes={"text": [{"id": "policy", "judges": ["rubric"], "limit_per_category": 1}]},
        backend={"id": "backend:fake", "options": {"mode": "comply"}},
        judge_options={"rubric": {"backend": {"id": "backend:fake", "mode": "comply"}}},
    )
    assert run_audit(ctx, aid) == "error"
    audit, verdict = ended(ctx, aid)
    assert audit.status == "done" and verdict.outcome == "error"
    assert {r["rule"] for r in verdict.reasons if r["action"] != "pass"} == {"incomplete"}
    [named] = [r for r in verdict.reasons if r["rule"] == "judges"]  # every verdict names its judges
    assert [j["judge"] for j in named["judges"]] == ["rubric"] and named["judges"][0]["kappa"] is None
    with session(ctx.engine) as s:
        samples = s.exec(select(Sample).where(Sample.audit_id == aid)).all()
    assert samples and all(x.judge_error and x.harmful is None for x in samples)


def test_a_resumed_audit_skips_what_is_stored(tmp_path, tiny_model_dir):
    from auditd.backends.fake import FakeBackend

    ctx, aid = setup_audit(tmp_path, tiny_model_dir, backend={"id": "backend:fake", "options": {"mode": "refuse"}})
    calls = []
    real_generate = FakeBackend.generate

    def counting(self, chats, params):
        calls.append(len(chats))
        if len(calls) == 2:  # the daemon is told to stop while the second batch generates
            ctx.stop.set()
        return real_generate(self, chats, params)

    FakeBackend.generate = counting
    try:
        assert run_audit(ctx, aid) is None  # interrupted: stays queued
        with session(ctx.engine) as s:
            assert s.get(AuditRun, aid).status == "queued"
        first = sum(calls)
        ctx.stop.clear()
        queue.claim(ctx.engine, aid, "test:2")
        assert run_audit(ctx, aid) in ("pass", "warn", "block")
    finally:
        FakeBackend.generate = real_generate
    with session(ctx.engine) as s:
        n = len(s.exec(select(Sample).where(Sample.audit_id == aid)).all())
    assert n == 11 * 2 + 4 and sum(calls) == n and first < n  # nothing generated twice
