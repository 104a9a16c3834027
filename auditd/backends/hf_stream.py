"""Continuous batching for `backend:hf`: rows leave the batch the step they are done, new prompts
take their places, and nothing is generated that no judge reads.

`model.generate` runs a batch until its longest row ends: a row that hit its end-of-sequence token
(or that early stop has already decided) keeps costing a full row of compute until then, and a
row decided after its prefix must be re-prefilled to continue. Here one KV cache holds every
active row; each decode step feeds one token per row at its own position (left padding, masked),
and after each step:

- a row that produced a stop token, reached `max_new_tokens`, or that `decide` calls settled
  leaves: its cache rows are dropped and columns no remaining row attends to are cut;
- when a quarter of the batch is free, the next prompts (kept in length order, so a batch shares
  its padding) are prefilled together and their caches merged in, left-padded to one length.

A decided row is continued from its cached state, so early stop no longer pays a second prefill.
Rows are returned in the order they finish. Greedy decoding picks the arg-max as `generate` does;
a row's tokens can still differ from a `generate` batch in rare near-ties, because a batch's
floating-point sums depend on its shape (true of `generate` across batch sizes too).

It needs a plain per-layer key/value cache (`DynamicLayer`) and a generation config with no logits
processors beyond temperature, top-p and suppressed tokens; otherwise `StreamUnsupported` is raised before any row is
returned and the caller uses `generate`.
"""

from __future__ import annotations

import functools
import inspect
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auditd.backends.base import Finished, StreamUnsupported

# Generation-config fields that would add logits processors this loop does not apply, with the
# value that means "off".
_PROCESSORS_OFF: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_length": 0,
    "min_new_tokens": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_p": None,
    "guidance_scale": None,
    "num_beams": 1,
    "penalty_alpha": None,
    "renormalize_logits": False,
    "watermarking_config": None,
}


@dataclass
class _Row:
    index: int
    position: int  # position id of the next token fed
    tokens: list[int] = field(default_factory=list)


def unsupported_config(config: Any) -> str | None:
    """The first generation-config field that asks for a processor this loop lacks, or None."""
    for name, off in _PROCESSORS_OFF.items():
        value = getattr(config, name, off)
        if value is not None and value != off and value not in ([], (), {}):
            return name
    if getattr(config, "do_sample", False) and getattr(config, "top_k", None) not in (None, 0):
        return "top_k"
    return None


MIN_SHARED_PREFIX = 4  # tokens: a shorter common opening is not worth a separate forward pass


class Stream:
    """One continuous-batching run over `prompts` (token ids)."""

    def __init__(
        self,
        model: Any,
        prompts: list[list[int]],
        *,
        max_new_tokens: int,
        batch_size: int,
        stops: set[int],
        pad_id: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        suppress: list[int] | None = None,
        begin_suppress: list[int] | None = None,
        decide: Callable[[int, list[int]], str | None] | None = None,
        decide_from: int = 24,
        decide_every: int = 8,
        tick: Callable[[], None] | None = None,
        tick_every_s: float = 2.0,
        labels: list[int] | None = None,
        halt: threading.Event | None = None,
    ):
        import torch

        self.torch = torch
        self.model = model
        self.prompts = prompts
        self.labels = labels if labels is not None else list(range(len(prompts)))  # the caller's indices
        self.halt = halt
        self.max_new = max_new_tokens
        self.size = max(1, batch_size)
        self.refill_at = max(1, self.size // 4)
        self.stops, self.pad_id = stops, pad_id
        self.temperature, self.top_p = temperature, top_p
        self.suppress = torch.tensor(sorted(set(suppress or [])), dtype=torch.long)
        self.begin_suppress = torch.tensor(sorted(set(suppress or []) | set(begin_suppress or [])), dtype=torch.long)
        self.decide, self.decide_from, self.decide_every = decide, decide_from, max(1, decide_every)
        self.tick, self.tick_every_s, self._ticked = tick, tick_every_s, time.monotonic()
        self.device = model.device
        # transformers 5.x names the cache argument `cache`; earlier releases `past_key_values`.
        self.cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.queue = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
        self.rows: list[_Row] = []
        self.cache: Any = None
        self.mask: Any = None  # [rows, columns] 1 where a row attends
        self.next_ids: Any = None  # [rows] the token each row feeds next
        self._prefix: list[int] | None = None
        self._prefix_kv: list[tuple[Any, Any]] = []
        self.steps = 0  # decode steps, for benches

    # -- public ------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Finished]:
        torch = self.torch
        with torch.inference_mode():
            while self.queue or self.rows:
                if self.halt is not None and self.halt.is_set():
                    return
                if self.queue and (not self.rows or self.size - len(self.rows) >= self.refill_at):
                    yield from self._admit()
                if self.rows:
                    yield from self._step()
                self._maybe_tick()

    # -- admission ---------------------------------------------------------------------------------
    def _admit(self) -> Iterator[Finished]:
        """Prefill the next prompts together. Their shared opening (a chat template's system turn, the
        same for every prompt) is computed once per stream and its keys and values copied into
        each row; each row then prefills only what follows, right-aligned after the padding."""
        torch = self.torch
        take = [self.queue.popleft() for _ in range(min(self.size - len(self.rows), len(self.queue)))]
        shared = self._shared_prefix()
        n = len(shared)
        width = max(len(self.prompts[i]) - n for i in take)
        ids = torch.full((len(take), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(take), n + width), dtype=torch.long)
        mask[:, :n] = 1
        for r, i in enumerate(take):
            rest = self.prompts[i][n:]
            if rest:
                ids[r, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
                mask[r, n + width - len(rest) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, n:]
        cache = self._new_cache()
        if n:
            for layer, (k, v) in zip(cache.layers, self._prefix_kv):
                layer.is_initialized, layer.device = True, k.device
                layer.replace(
                    k.expand(len(take), -1, -1, -1).contiguous(), v.expand(len(take), -1, -1, -1).contiguous()
                )
        out = self._forward(ids, mask, positions, cache, logits_to_keep=1)  # fills `cache` in place
        first = self._pick(out.logits[:, -1, :], self.begin_suppress)
        rows = [_Row(i, len(self.prompts[i])) for i in take]
        start = len(self.rows)
        self._merge(cache, mask, rows, first)
        yield from self._record(first, start)

    def _shared_prefix(self) -> list[int]:
        """The tokens every prompt of this stream starts with, less one (each row must prefill at
        least one token of its own to get its first logits); computed once, with its keys and values."""
        if self._prefix is None:
            prompts = self.prompts
            common = os.path.commonprefix(prompts) if len(prompts) > 1 else []
            self._prefix = list(common)[: max(0, min(map(len, prompts), default=0) - 1)]
            self._prefix_kv = []
            if len(self._prefix) >= MIN_SHARED_PREFIX:
                ids = self.torch.tensor([self._prefix], dtype=self.torch.long)
                cache = self._new_cache()
                self._forward(
                    ids, self.torch.ones_like(ids), self.torch.arange(len(self._prefix))[None], cache, logits_to_keep=1
                )
                self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
            else:
                self._prefix = []
        return self._prefix

    def _merge(self, cache: Any, mask: Any, rows: list[_Row], first: Any) -> None:
        torch = self.torch
        if self.cache is None:
            self.cache, self.mask, self.rows, self.next_ids = cache, mask.to(self.device), rows, first
            return
        old, new = self.mask.shape[1], mask.shape[1]
        width = max(old, new)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.replace(
                torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)], 0),
                torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)], 0),
            )
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask.to(self.device), width, dim=1)], 0)
        self.rows += rows
        self.next_ids = torch.cat([self.next_ids, first], 0)

    # -- decoding ----------------------------------------------------------------------------------
    def _step(self) -> Iterator[Finished]:
        torch = self.torch
        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.device)
        self.mask = torch.cat([self.mask, ones], 1)
        positions = torch.tensor([[r.position] for r in self.rows], dtype=torch.long, device=self.device)
        out = self._forward(self.next_ids[:, None], self.mask, positions, self.cache)
        for r in self.rows:
            r.position += 1
        self.steps += 1
        self.next_ids = self._pick(out.logits[:, -1, :], self.suppress)
        yield from self._record(self.next_ids)

    def _record(self, chosen: Any, start: int = 0) -> Iterator[Finished]:
        """Append each row's token (`chosen` for rows `start`...); rows that are done leave the batch
        and are yielded."""
        done: list[tuple[int, str | None]] = []
        for k, token in enumerate(chosen.tolist(), start):
            row = self.rows[k]
            if token in self.stops:
                done.append((k, None))
                continue
            row.tokens.append(token)
            n = len(row.tokens)
            if n >= self.max_new:
                done.append((k, None))
            elif self.decide and n >= self.decide_from and (n - self.decide_from) % self.decide_every == 0:
                why = self.decide(self.labels[row.index], row.tokens)
                if why:
                    done.append((k, why))
        if not done:
            return
        leaving = {k for k, _ in done}
        finished = [Finished(self.labels[self.rows[k].index], self.rows[k].tokens, why) for k, why in done]
        self._drop(leaving)
        yield from finished

    def _drop(self, leaving: set[int]) -> None:
        torch = self.torch
        keep = [k for k in range(len(self.rows)) if k not in leaving]
        self.rows = [self.rows[k] for k in keep]
        if not keep:
            self.cache = self.mask = self.next_ids = None
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, index)
        self.next_ids = self.next_ids.index_select(0, index)
        # Columns no remaining row attends to (the left padding of rows that left) are cut.
        attended = self.mask.any(0).nonzero()
        cut = int(attended[0]) if len(attended) else 0
        for layer in self.cache.layers:
            layer.replace(
                layer.keys.index_select(0, index)[:, :, cut:], layer.values.index_select(0, index)[:, :, cut:]
            )
        self.mask = self.mask[:, cut:]

    # -- helpers -----------------------------------------------------------------------------------
    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, **extra: Any) -> Any:
        return self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            **{self.cache_arg: cache},
            **extra,
        )

    def _new_cache(self) -> Any:
        cache = check_cache_support(self.model)
        cache.layers = [growing_layer() for _ in cache.layers]
        return cache

    def _pick(self, logits: Any, suppress: Any) -> Any:
        torch = self.torch
        if len(suppress):  # generation config's suppress_tokens (begin_: the first token too)
            logits = logits.index_fill(-1, suppress.to(logits.device), float("-inf"))
        if self.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            ordered, order = probs.sort(-1, descending=True)
            outside = ordered.cumsum(-1) - ordered > self.top_p  # keeps the token that crosses top_p
            ordered = ordered.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, ordered)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    def _maybe_tick(self) -> None:
        if self.tick and time.monotonic() - self._ticked >= self.tick_every_s:
            self._ticked = time.monotonic()
            self.tick()


def check_cache_support(model: Any) -> Any:
    """An empty cache of the model's own layer types (from its config); StreamUnsupported unless
    every layer is a plain full-attention one (not a sliding window, not linear attention)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        raise StreamUnsupported(f"cache layers {sorted({type(x).__name__ for x in layers or []})}")
    return cache


def shards_of(prompts: list[list[int]], shards: int) -> list[list[int]]:
    """Indices of `prompts` dealt round-robin in length order: shards of like lengths and sizes."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[k::shards] for k in range(shards) if order[k::shards]]


def run_parallel(
    streams: list[Stream], halt: threading.Event, tick: Callable[[], None] | None, tick_every_s: float = 2.0
) -> Iterator[Finished]:
    """Several streams at once, one thread each, with one intra-op thread each: on a CPU two
    single-threaded decoders outrun one decoder on two threads (bench/bench_audit.py), because a
    decode step's small operations do not split well across cores. Rows come back as they finish;
    `tick` runs here, in the caller's thread (it may use the database), and an exception from it
    or from a worker halts every worker before it propagates."""
    import torch

    results: queue.Queue = queue.Queue()
    done = object()

    def work(stream: Stream) -> None:
        try:
            torch.set_num_threads(1)
            for row in stream:
                results.put(row)
        except BaseException as exc:  # handed to the caller's thread
            results.put(exc)
        finally:
            results.put(done)

    threads_before = torch.get_num_threads()
    workers = [
        threading.Thread(target=work, args=(s,), name=f"auditd-stream-{k}", daemon=True) for k, s in enumerate(streams)
    ]
    for w in workers:
        w.start()
    running, ticked = len(workers), time.monotonic()
    try:
        while running:
            try:
                item = results.get(timeout=tick_every_s)
            except queue.Empty:
                item = None
            if item is done:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            elif item is not None:
                yield item
            if tick and time.monotonic() - ticked >= tick_every_s:
                ticked = time.monotonic()
                tick()
    finally:
        halt.set()
        for w in workers:
            w.join()
        torch.set_num_threads(threads_before)


def _left_pad(t: Any, width: int, dim: int = 2) -> Any:
    """`t` padded with zeros on the left of `dim` to `width`."""
    import torch

    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim)


def growing_layer() -> Any:
    return _growing_layer_class()()


@functools.cache
def _growing_layer_class() -> type:
    """A `DynamicLayer` whose keys and values live in a buffer with room to grow: a decode step
    writes its token in place instead of copying the whole cache (`torch.cat`) as the stock layer
    does, which costs more each step as answers grow."""
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self) -> None:
            super().__init__()
            self._k: Any = None
            self._v: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized or self.keys is None or self.keys.numel() == 0:
                self.is_initialized, self.device = True, key_states.device
                self.replace(key_states, value_states)
                return self.keys, self.values
            n, add = self.keys.shape[-2], key_states.shape[-2]
            if self._k is None or n + add > self._k.shape[-2]:
                room = n + add + max(32, (n + add) // 2)
                self._k, self._v = _with_room(self.keys, room), _with_room(self.values, room)
            self._k[:, :, n : n + add] = key_states
            self._v[:, :, n : n + add] = value_states
            self.keys, self.values = self._k[:, :, : n + add], self._v[:, :, : n + add]
            return self.keys, self.values

        def replace(self, keys: Any, values: Any) -> None:
            """New contents (rows merged or dropped): the buffer grows again on the next step."""
            self.keys, self.values, self._k, self._v = keys, values, None, None

    def _with_room(t: Any, room: int) -> Any:
        buf = torch.empty((*t.shape[:2], room, t.shape[3]), dtype=t.dtype, device=t.device)
        buf[:, :, : t.shape[2]] = t
        return buf

    return GrowingLayer
