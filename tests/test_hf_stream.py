"""Continuous batching in backend:hf (auditd.backends.hf_stream), through the real loader with tiny
models: the same tokens as `model.generate`, rows leaving at their stop token or when `decide`
settles them, new prompts taking their places, and configs it cannot honour refused up front."""

from __future__ import annotations

import json

import pytest

from auditd.backends.base import BackendError, GenerationParams, StreamingGeneration, StreamUnsupported
from auditd.backends.hf import HFBackend
from auditd.backends.hf_stream import Stream, run_parallel, shards_of
from auditd.testing import make_scripted_llama

CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "tell me about the weather in a long sentence with many words"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is two plus two"}],
    [{"role": "user", "content": "a"}],
    [{"role": "user", "content": "write a short poem about the sea and the sky at night"}],
    [{"role": "user", "content": "how do I bake bread"}],
    [{"role": "user", "content": "one two three four five six seven eight nine ten eleven twelve"}],
    [{"role": "user", "content": "why"}],
    [{"role": "user", "content": "list three colours"}],
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    b = HFBackend(str(tiny_model_dir))
    yield b
    b.close()


def streamed(backend, ids, params, **kw) -> dict[int, list[int]]:
    return {row.index: row.tokens for row in backend.generate_stream(ids, params, **kw)}


@pytest.mark.parametrize("batch", [1, 3, 8, 16])
def test_greedy_rows_equal_generate(backend, batch):
    assert isinstance(backend, StreamingGeneration)
    ids = backend.encode_chats(CHATS)
    params = GenerationParams(max_new_tokens=12, batch_size=batch)
    want = backend.generate_tokens(ids, GenerationParams(max_new_tokens=12, batch_size=1))  # one at a time
    got = streamed(backend, ids, params)
    assert sorted(got) == list(range(len(ids)))
    assert [got[i] for i in range(len(ids))] == want


def test_rows_leave_as_they_finish_and_new_prompts_fill_the_batch(backend, monkeypatch):
    """`decide` stops even rows after 4 tokens; the freed places are refilled from the queue, so no
    forward pass ever holds more than the batch size and the decided rows stop exactly there."""
    shapes = []
    real = Stream._forward

    def recording(self, ids, *a, **kw):
        shapes.append(tuple(ids.shape))
        return real(self, ids, *a, **kw)

    monkeypatch.setattr(Stream, "_forward", recording)
    ids = backend.encode_chats(CHATS)
    asked = []

    def decide(index, tokens):
        asked.append((index, len(tokens)))
        return "even" if index % 2 == 0 else None

    rows = list(
        backend.generate_stream(
            ids, GenerationParams(max_new_tokens=10, batch_size=4), decide=decide, decide_from=4, decide_every=3
        )
    )
    by_index = {r.index: r for r in rows}
    assert sorted(by_index) == list(range(len(ids)))
    full = backend.generate_tokens(ids, GenerationParams(max_new_tokens=10, batch_size=1))
    assert any(len(f) >= 4 for f in full[::2])  # the test decides something
    for i, r in by_index.items():
        stopped = i % 2 == 0 and len(full[i]) >= 4
        assert (r.decided == "even") == stopped
        assert r.tokens == (full[i][:4] if stopped else full[i])  # decided rows stop exactly there
    assert {n for _, n in asked} <= {4, 7} and 4 in {n for _, n in asked}  # from decide_from, every decide_every
    assert max(rows for rows, _ in shapes) <= 4
    prefills = [s for s in shapes if s[1] > 1]
    assert prefills[0][0] == 4 and len(prefills) >= 2  # the first four, then refills as rows left


def test_a_stop_token_ends_a_row_without_it(tmp_path):
    model = make_scripted_llama(tmp_path / "m", "Fine.")
    b = HFBackend(str(model))
    ids = b.encode_chats(CHATS[:5])
    rows = list(b.generate_stream(ids, GenerationParams(max_new_tokens=16, batch_size=2)))
    assert len(rows) == 5
    assert all(b.decode(r.tokens) == "Fine." and len(r.tokens) == 1 and r.decided is None for r in rows)
    b.close()


def test_sampling_is_repeatable_by_seed(backend):
    ids = backend.encode_chats(CHATS)
    params = GenerationParams(max_new_tokens=8, batch_size=4, temperature=1.0, top_p=0.9, seed=7)
    first, again = streamed(backend, ids, params), streamed(backend, ids, params)
    other = streamed(backend, ids, GenerationParams(max_new_tokens=8, batch_size=4, temperature=1.0, seed=8))
    assert first == again and first != other


def test_a_generation_config_with_other_processors_is_refused_before_any_row(tmp_path, tiny_model_dir):
    import shutil

    model = tmp_path / "penalised"
    shutil.copytree(tiny_model_dir, model)
    cfg = model / "generation_config.json"
    data = json.loads(cfg.read_text()) if cfg.exists() else {}
    cfg.write_text(json.dumps(data | {"repetition_penalty": 1.3}))
    b = HFBackend(str(model))
    with pytest.raises(StreamUnsupported, match="repetition_penalty"):
        next(iter(b.generate_stream(b.encode_chats(CHATS[:2]), GenerationParams(max_new_tokens=4))))
    b.close()


def test_tick_is_called_and_its_exception_ends_the_stream(backend):
    ids = backend.encode_chats(CHATS)

    class Stop(Exception):
        pass

    def tick():
        raise Stop

    stream = Stream(
        backend.model, ids, max_new_tokens=50, batch_size=2, stops=set(), pad_id=0, tick=tick, tick_every_s=0.0
    )
    with pytest.raises(Stop):
        list(stream)
    assert stream.steps <= 1  # the first tick after a step ends it


@pytest.fixture(scope="module")
def three_workers(tiny_model_dir):
    b = HFBackend(str(tiny_model_dir), stream_workers=3)
    yield b
    b.close()


def test_parallel_decoders_give_the_same_greedy_rows(three_workers):
    """Three single-threaded decoders, one thread each, share the prompts: every row comes back once,
    equal to one-at-a-time generation."""
    import threading

    ids = three_workers.encode_chats(CHATS * 3)
    got = streamed(three_workers, ids, GenerationParams(max_new_tokens=10, batch_size=4))
    assert sorted(got) == list(range(len(ids)))
    assert [got[i] for i in range(len(ids))] == three_workers.generate_tokens(ids, GenerationParams(10, batch_size=1))
    assert not [t for t in threading.enumerate() if t.name.startswith("auditd-stream")]


def test_an_error_in_one_decoder_or_in_tick_halts_them_all(three_workers):
    import threading

    ids = three_workers.encode_chats(CHATS * 3)

    def decide(index, tokens):
        if index == 5:
            raise ValueError("judge broke")
        return None

    params = GenerationParams(max_new_tokens=10, batch_size=4)
    with pytest.raises(BackendError, match="judge broke"):
        list(three_workers.generate_stream(ids, params, decide=decide, decide_from=2, decide_every=1))
    assert not [t for t in threading.enumerate() if t.name.startswith("auditd-stream")]

    class Stop(Exception):
        pass

    def tick():
        raise Stop

    halt = threading.Event()
    streams = [
        Stream(
            three_workers.model,
            [ids[i] for i in part],
            max_new_tokens=50,
            batch_size=4,
            stops=set(),
            pad_id=0,
            labels=part,
            halt=halt,
        )
        for part in shards_of(ids, 3)
    ]
    with pytest.raises(Stop):
        list(run_parallel(streams, halt, tick, tick_every_s=0.0))
    assert halt.is_set() and not [t for t in threading.enumerate() if t.name.startswith("auditd-stream")]
    assert sum(s.steps for s in streams) < 3 * 50  # halted, not run to the end


def test_stream_workers_is_bounded(tiny_model_dir):
    with pytest.raises(BackendError, match="stream_workers"):
        HFBackend(str(tiny_model_dir), stream_workers=0)


def test_a_shared_opening_is_computed_once_and_changes_no_token(backend):
    """Prompts that open with the same system turn: that opening is prefilled once per stream and
    copied into each row; the rows still equal one-at-a-time generation."""
    system = {"role": "system", "content": "You are a careful assistant. Answer the question below in one line."}
    chats = [[system, *c[-1:]] for c in CHATS]
    ids = backend.encode_chats(chats)
    suppress = list(backend.model.generation_config.suppress_tokens or [])
    stream = Stream(
        backend.model, ids, max_new_tokens=10, batch_size=4, stops=backend._stop_ids(), pad_id=0, suppress=suppress
    )
    got = {r.index: r.tokens for r in stream}
    assert len(stream._shared_prefix()) >= 8  # the system turn's tokens
    assert [got[i] for i in range(len(ids))] == backend.generate_tokens(ids, GenerationParams(10, batch_size=1))
