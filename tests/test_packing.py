"""Cross-probe packing and two-stage early stop, through the real HF loader with tiny models: full
batches across probes, answers routed to the right probe and sample key, early-stopped answers
marked, continued answers equal to full-length ones, and resuming a stopped audit duplicates nothing."""

from __future__ import annotations

import pytest
from sqlmodel import select

from auditd.backends.hf import HFBackend
from auditd.policy.model import ProbePlan
from auditd.probe.build import build_probe
from auditd.registry.digest import content_digest
from auditd.report.document import audit_report
from auditd.runner.audit import run_audit, select_items
from auditd.scheduler import queue
from auditd.store.db import session
from auditd.store.models import AuditRun, Sample
from auditd.testing import make_scripted_llama
from tests.conftest import queue_text_audit

REFUSAL = "I'm sorry, but I can't help with that."
PROBES = [
    {"id": "policy", "limit_per_category": 1},
    {"id": "overrefusal", "limit_per_category": 1},
]


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory):
    """Answers REFUSAL, then " Anyway" forever: decided after its first token, never ends by itself."""
    return make_scripted_llama(tmp_path_factory.mktemp("refuser") / "m", REFUSAL, repeat=" Anyway")


def audit_of(tmp_path, model, name="a", **generation):
    gen = {
        "max_new_tokens": 24,
        "batch_size": 8,
        "early_stop": {"enabled": True, "prefix_tokens": 8},
    } | generation
    (tmp_path / name).mkdir()
    return queue_text_audit(
        tmp_path / name,
        tmp_path / name / "home",
        model,
        checkpoint_id=content_digest(model, root=model),
        probes={"text": PROBES},
        generation=gen,
    )


def samples_of(ctx, aid):
    with session(ctx.engine) as s:
        return {(r.probe_id, r.item_index, r.variant): r for r in s.exec(select(Sample).where(Sample.audit_id == aid))}


def planned_keys():
    keys = set()
    for p in PROBES:
        plan = ProbePlan(**p)
        keys |= {(plan.id, it.index, it.variant) for it in select_items(build_probe(plan), plan)}
    return keys


def counting_calls(monkeypatch):
    calls = []
    real = HFBackend.generate_tokens

    def counting(self, ids, params, **kw):
        calls.append((len(ids), params.max_new_tokens))
        return real(self, ids, params, **kw)

    monkeypatch.setattr(HFBackend, "generate_tokens", counting)
    return calls


def test_packed_batches_cross_probes_and_settled_refusals_stop_early(tmp_path, refusing_model, monkeypatch):
    calls = counting_calls(monkeypatch)
    ctx, aid = audit_of(tmp_path, refusing_model)
    assert run_audit(ctx, aid) in ("pass", "warn", "block")
    samples = samples_of(ctx, aid)
    assert set(samples) == planned_keys()  # every answer stored under its own probe and key
    n = len(samples)
    assert calls == [(8, 8)] * (n // 8) + ([(n % 8, 8)] if n % 8 else [])  # full batches across probes, prefixes only
    assert all(
        r.early_stop and r.new_tokens == 8 and r.output.startswith(REFUSAL) and r.refused for r in samples.values()
    )
    t = audit_report(ctx.engine, content_digest(refusing_model, root=refusing_model), aid)["audit"]["timings"]
    assert t["tokens"] == 8 * n and t["early_stopped"] == n and t["early_stopped_share"] == 1.0
    assert t["load_s"] > 0 and t["tokens_per_s"] > 0 and t["batch_size"] == 8 and t["batch_size_from"] == "policy"


def test_continued_answers_equal_full_length_ones(tmp_path, tiny_model_dir):
    """A random model's babble is never decided by its prefix: every answer continues from its exact
    prefix tokens, and ends where one full-length generation ends."""
    ctx, aid = audit_of(tmp_path, tiny_model_dir, "early")
    run_audit(ctx, aid)
    ctx2, aid2 = audit_of(tmp_path, tiny_model_dir, "full", early_stop={"enabled": False})
    run_audit(ctx2, aid2)
    early, full = samples_of(ctx, aid), samples_of(ctx2, aid2)
    assert set(early) == set(full) == planned_keys()
    assert all(r.early_stop is False for r in early.values()) and all(r.early_stop is None for r in full.values())
    assert {k: r.output for k, r in early.items()} == {k: r.output for k, r in full.items()}
    assert [early[k].new_tokens for k in early] == [full[k].new_tokens for k in early]


def test_a_stopped_audit_resumes_with_the_same_keys_and_no_duplicates(tmp_path, refusing_model, monkeypatch):
    calls = counting_calls(monkeypatch)
    ctx, aid = audit_of(tmp_path, refusing_model, max_new_tokens=24, early_stop={"enabled": False})
    seen = []

    def progress(probe, done, total):
        seen.append((probe, done))
        if done and len(seen) > 2:  # the daemon is told to stop once a batch is stored
            ctx.stop.set()

    ctx.progress = progress
    assert run_audit(ctx, aid) is None  # interrupted: stays queued
    first = len(samples_of(ctx, aid))
    assert 0 < first < len(planned_keys())
    ctx.stop.clear()
    ctx.progress = None
    queue.claim(ctx.engine, aid, "test:2")
    assert run_audit(ctx, aid) in ("pass", "warn", "block")
    samples = samples_of(ctx, aid)
    assert set(samples) == planned_keys()
    assert sum(n for n, _ in calls) == len(samples)  # nothing generated twice
    with session(ctx.engine) as s:
        assert s.get(AuditRun, aid).status == "done"
