"""Cross-probe packing and early stop, through the real HF loader with tiny models: one continuous
batch across probes (or, where a model cannot stream, packed two-stage batches), answers routed to
the right probe and sample key, early-stopped answers marked, continued answers equal to
full-length ones, and resuming a stopped audit duplicates nothing."""

from __future__ import annotations

import pytest
from sqlmodel import select

from auditd.backends.base import StreamUnsupported
from auditd.backends.hf import HFBackend
from auditd.backends.hf_stream import Stream
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


def forward_shapes(monkeypatch):
    shapes = []
    real = Stream._forward

    def recording(self, ids, *a, **kw):
        shapes.append(tuple(ids.shape))
        return real(self, ids, *a, **kw)

    monkeypatch.setattr(Stream, "_forward", recording)
    return shapes


def streamed_prompts(monkeypatch):
    """Prompts given to each continuous-batching run."""
    runs = []
    real = HFBackend.generate_stream

    def counting(self, ids, params, **kw):
        runs.append(len(ids))
        return real(self, ids, params, **kw)

    monkeypatch.setattr(HFBackend, "generate_stream", counting)
    return runs


def check_all_stopped_after_prefix(ctx, aid, model, samples):
    n = len(samples)
    assert all(
        r.early_stop and r.new_tokens == 8 and r.output.startswith(REFUSAL) and r.refused for r in samples.values()
    )
    t = audit_report(ctx.engine, content_digest(model, root=model), aid)["audit"]["timings"]
    assert t["tokens"] == 8 * n and t["early_stopped"] == n and t["early_stopped_share"] == 1.0
    assert t["load_s"] > 0 and t["tokens_per_s"] > 0 and t["batch_size"] == 8 and t["batch_size_from"] == "policy"


def test_one_stream_across_probes_and_settled_refusals_leave_after_their_prefix(tmp_path, refusing_model, monkeypatch):
    shapes = forward_shapes(monkeypatch)
    runs = streamed_prompts(monkeypatch)
    monkeypatch.setattr(HFBackend, "decoders", lambda self: 1)  # one decoder: its batches are the packing
    ctx, aid = audit_of(tmp_path, refusing_model)
    assert run_audit(ctx, aid) in ("pass", "warn", "block")
    samples = samples_of(ctx, aid)
    assert set(samples) == planned_keys()  # every answer stored under its own probe and key
    assert runs == [len({s.prompt for s in samples.values()})]  # one run over every probe's distinct prompts
    assert max(rows for rows, _ in shapes) == 8  # full batches across probe boundaries, never more
    assert sum(1 for _, width in shapes if width == 1) <= 7 * -(-len(samples) // 8)  # decode steps: prefixes only
    check_all_stopped_after_prefix(ctx, aid, refusing_model, samples)


def test_without_streaming_the_prefixes_are_generated_in_packed_batches(tmp_path, refusing_model, monkeypatch):
    def unsupported(self, ids, params, **kw):
        raise StreamUnsupported("this test")
        yield  # a generator, as the real one

    monkeypatch.setattr(HFBackend, "generate_stream", unsupported)
    calls = counting_calls(monkeypatch)
    ctx, aid = audit_of(tmp_path, refusing_model)
    assert run_audit(ctx, aid) in ("pass", "warn", "block")
    samples = samples_of(ctx, aid)
    assert set(samples) == planned_keys()
    n = len(samples)
    assert calls == [(8, 8)] * (n // 8) + ([(n % 8, 8)] if n % 8 else [])  # full batches across probes, prefixes only
    check_all_stopped_after_prefix(ctx, aid, refusing_model, samples)


def early_and_full(tmp_path, model, **generation):
    ctx, aid = audit_of(tmp_path, model, "early", **generation)
    run_audit(ctx, aid)
    ctx2, aid2 = audit_of(tmp_path, model, "full", early_stop={"enabled": False}, **generation)
    run_audit(ctx2, aid2)
    early, full = samples_of(ctx, aid), samples_of(ctx2, aid2)
    assert set(early) == set(full) == planned_keys()
    assert all(r.early_stop is None for r in full.values())
    return early, full


def test_continued_answers_equal_full_length_ones(tmp_path, tiny_model_dir):
    """Sampled babble is never decided early (a loop is final only under greedy decoding): every
    answer runs on from its cached prefix and equals the full-length one, token for token."""
    early, full = early_and_full(tmp_path, tiny_model_dir, temperature=0.8)
    assert all(r.early_stop is False for r in early.values())
    assert {k: (r.output, r.new_tokens) for k, r in early.items()} == {
        k: (r.output, r.new_tokens) for k, r in full.items()
    }


def test_greedy_token_loops_stop_early_and_decide_the_same(tmp_path, tiny_model_dir):
    """A random model's greedy babble falls into loops: stopped answers are prefixes of the full ones,
    judged the same (degenerate)."""
    early, full = early_and_full(tmp_path, tiny_model_dir)
    assert any(r.early_stop for r in early.values())
    for k, r in early.items():
        if r.early_stop:
            assert full[k].output.startswith(r.output) and r.new_tokens < full[k].new_tokens
            assert (r.harmful, r.refused, r.degenerate) == (full[k].harmful, full[k].refused, full[k].degenerate)
        else:
            assert (r.output, r.new_tokens) == (full[k].output, full[k].new_tokens)


def test_a_stopped_audit_resumes_with_the_same_keys_and_no_duplicates(tmp_path, refusing_model, monkeypatch):
    runs = streamed_prompts(monkeypatch)
    ctx, aid = audit_of(tmp_path, refusing_model, max_new_tokens=24, early_stop={"enabled": False})
    seen = []

    def progress(probe, done, total):
        seen.append((probe, done))
        if done and len(seen) > 2:  # the daemon is told to stop once a batch is stored
            ctx.stop.set()

    ctx.progress = progress
    assert run_audit(ctx, aid) is None  # interrupted: stays queued
    first = samples_of(ctx, aid)
    assert 0 < len(first) < len(planned_keys())
    ctx.stop.clear()
    ctx.progress = None
    queue.claim(ctx.engine, aid, "test:2")
    assert run_audit(ctx, aid) in ("pass", "warn", "block")
    samples = samples_of(ctx, aid)
    assert set(samples) == planned_keys()
    assert {k: r.id for k, r in first.items()} == {k: samples[k].id for k in first}  # stored once, kept
    assert runs[1] == len({r.prompt for k, r in samples.items() if k not in first})  # only the missing ones
    with session(ctx.engine) as s:
        assert s.get(AuditRun, aid).status == "done"
