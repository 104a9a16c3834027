"""batch_size auto: a short measurement picks a batch within the memory budget, cached per model
shape and device; a fixed number is used as is; a broken or foreign cache file is measured over."""

from __future__ import annotations

import json

import pytest

from auditd.backends import batch_size
from auditd.backends.batch_size import CANDIDATES, measure, resolve, row_bytes, shape_key, stream_decoders
from auditd.backends.hf import HFBackend


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = HFBackend(str(tiny_model_dir))
    yield b
    b.close()


def prompts(backend):
    return backend.encode_chats([[{"role": "user", "content": f"question number {i}"}] for i in range(4)])


def test_auto_measures_once_then_reads_the_cache(backend, tmp_path):
    cache = tmp_path / "batch_size.json"
    size, how = resolve("auto", backend, prompts(backend), cache, 64)
    assert how == "measured" and size in CANDIDATES
    entry = json.loads(cache.read_text())[shape_key(backend.model, "cpu", 64)]
    assert entry["batch_size"] == size and str(size) in entry["tokens_per_s"]
    before = backend.stats["generated_tokens"]
    assert resolve("auto", backend, prompts(backend), cache, 64) == (size, "cached")
    assert backend.stats["generated_tokens"] == before  # nothing generated: the cache answered


def test_a_fixed_batch_size_is_used_as_is(backend, tmp_path):
    assert resolve(12, backend, prompts(backend), tmp_path / "c.json", 64) == (12, "policy")
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps([1, 2]), json.dumps({"x": {"batch_size": 10**9}})])
def test_a_broken_cache_is_measured_over(backend, tmp_path, content):
    cache = tmp_path / "batch_size.json"
    cache.write_text(content)
    size, how = resolve("auto", backend, prompts(backend), cache, 16, upper=100)
    assert how == "measured" and 1 <= size <= 100


def test_a_climb_cut_by_a_small_audit_is_not_cached(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(batch_size, "SMALL_AUDIT", 0)
    cache = tmp_path / "batch_size.json"
    size, how = resolve("auto", backend, prompts(backend), cache, 64, upper=4)
    assert (size, how) == (4, "measured") and not cache.exists()


def test_an_audit_that_fits_one_wave_is_not_measured(backend, tmp_path):
    cache = tmp_path / "batch_size.json"
    before = backend.stats["generated_tokens"]
    size, how = resolve("auto", backend, prompts(backend), cache, 64, upper=15)
    decoders = stream_decoders(backend)
    assert how == "one wave" and size == -(-15 // decoders) and size * decoders >= 15
    assert backend.stats["generated_tokens"] == before and not cache.exists()  # nothing generated, nothing cached


def test_the_memory_budget_caps_the_batch(backend):
    ids = prompts(backend)
    per_row = row_bytes(backend.model, max(map(len, ids)) + 16)
    decoders = stream_decoders(backend)  # each decoder holds a batch
    assert decoders >= 1
    size, rates, settled = measure(backend, ids, budget=per_row * 5 * decoders)  # room for 4 rows each, not 8
    assert size == 4 and set(rates) == {4} and settled


def test_the_measurement_generates_as_the_audit_will(backend, monkeypatch):
    """A streaming backend is measured streaming, with a batch for each of its decoders."""
    seen = []
    real = HFBackend.generate_stream

    def counting(self, ids, params, **kw):
        seen.append((len(ids), params.batch_size))
        return real(self, ids, params, **kw)

    monkeypatch.setattr(HFBackend, "generate_stream", counting)
    size, rates, _ = measure(backend, prompts(backend), budget=1 << 30, limit=16)
    decoders = stream_decoders(backend)
    assert seen == [(n * decoders, n) for n in rates] and size in rates


def test_backends_without_tokens_fall_back(tmp_path):
    from auditd.backends.fake import FakeBackend

    assert resolve("auto", FakeBackend(), [], tmp_path / "c.json", 64) == (8, "fallback")
