"""`generation.batch_size: auto` — the batch size measured, not guessed.

A short probe at the start of an audit generates a few tokens at growing batch sizes (4, 8, 16,
...) and keeps the largest one that still raised tokens/s by `MIN_GAIN` and whose estimated
memory (KV cache and activations for the longest prompt) fits the budget; an out-of-memory error
ends the climb. The pick is cached per model shape and device in a small JSON file under the
state folder, so only the first audit of a shape pays for the probe (a few seconds).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from auditd.backends.base import GenerationParams

log = logging.getLogger(__name__)

FALLBACK = 8  # backends without a token interface (openai: requests in flight; fake)
CANDIDATES = (4, 8, 16, 32, 64, 128, 256)
MIN_GAIN = 1.10  # a larger batch must raise tokens/s by 10% to be worth its memory and latency
PROBE_NEW_TOKENS = 16
SMALL_AUDIT = 64  # items: an audit this small runs in one wave, unmeasured
MAX_CACHE_BYTES = 1 << 20  # a cache file larger than this is not ours: ignored


def shape_key(model: Any, device: str, max_new_tokens: int) -> str:
    """What the best batch depends on: the model's shape and dtype, the device, the answer length."""
    import torch

    cfg = model.config
    parts = [getattr(cfg, "model_type", "?")] + [
        str(getattr(cfg, k, "?"))
        for k in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
        )
    ]
    dtype = str(getattr(model, "dtype", "?")).replace("torch.", "")
    if device.startswith("cuda") and torch.cuda.is_available():
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        where = f"cpu{os.cpu_count()}x{torch.get_num_threads()}"
    return "/".join(parts + [dtype, where, f"new{max_new_tokens}"])


def read_cache(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CACHE_BYTES or path.is_symlink():
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(path: Path, data: dict) -> None:
    """Atomic replace; a failure to write only costs the next audit another probe."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write the batch-size cache %s: %s", path, exc)


def cached_pick(data: dict, key: str) -> int | None:
    entry = data.get(key)
    size = entry.get("batch_size") if isinstance(entry, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= 1024 else None


def memory_budget(device: str) -> int:
    """Bytes a batch may use beyond the weights: half the free GPU memory, or a quarter of the free
    RAM (at most 4 GiB) on a CPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free // 2
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        free = 4 << 30
    return min(4 << 30, free // 4)


def row_bytes(model: Any, seq_len: int) -> int:
    """Estimated bytes one row of a batch needs: its KV cache plus a margin for activations."""
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 1)
    heads = getattr(cfg, "num_attention_heads", 1)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    hidden = getattr(cfg, "hidden_size", 1)
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    width = getattr(getattr(model, "dtype", None), "itemsize", 4)
    kv = 2 * layers * kv_heads * head_dim * seq_len * width
    return kv + 8 * seq_len * hidden * width + 4 * getattr(cfg, "vocab_size", 0)


def stream_decoders(backend: Any) -> int:
    """Decoders a streaming backend runs at once (each with its own batch); 0 if it does not stream."""
    from auditd.backends.base import StreamingGeneration

    return backend.decoders() if isinstance(backend, StreamingGeneration) and hasattr(backend, "decoders") else 0


def generate_probe(backend: Any, batch: list[list[int]], size: int, decoders: int) -> int:
    """Tokens generated for `batch` at `size` rows per forward pass, the way the audit will generate:
    continuous batching where the backend streams (`decoders` of them at once), else `generate`."""
    params = GenerationParams(max_new_tokens=PROBE_NEW_TOKENS, batch_size=size)
    if decoders:
        return sum(len(row.tokens) for row in backend.generate_stream(batch, params))
    backend.generate_tokens(batch, params, min_new_tokens=PROBE_NEW_TOKENS)
    return size * PROBE_NEW_TOKENS


def measure(
    backend: Any, prompts: list[list[int]], budget: int, limit: int = 1024
) -> tuple[int, dict[int, float], bool]:
    """(chosen batch size, tokens/s by batch size, whether the climb ended on its own) from short runs
    on the audit's own prompts; a climb cut by `limit` (a small audit) still rose."""
    seq = max(len(p) for p in prompts) + PROBE_NEW_TOKENS
    per_row = row_bytes(backend.model, seq)
    streaming = stream_decoders(backend)
    decoders = streaming or 1
    params = GenerationParams(max_new_tokens=PROBE_NEW_TOKENS, batch_size=1)
    backend.generate_tokens(prompts[:1], params, min_new_tokens=PROBE_NEW_TOKENS)  # warm-up: first call pays setup
    rates: dict[int, float] = {}
    best, best_rate = CANDIDATES[0], 0.0
    for size in (c for c in CANDIDATES if c <= limit):
        if size * decoders * per_row > budget:
            break
        batch = [prompts[i % len(prompts)] for i in range(size * decoders)]
        start = time.perf_counter()
        try:
            made = generate_probe(backend, batch, size, streaming)
        except Exception as exc:  # out of memory (torch raises several types): the previous size stands
            if "out of memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
                raise
            break
        rates[size] = made / (time.perf_counter() - start)
        if rates[size] < best_rate * MIN_GAIN:
            break
        best, best_rate = size, rates[size]
    else:
        return best, rates, limit >= CANDIDATES[-1]
    return best, rates, True


def resolve(
    setting: int | str,
    backend: Any,
    prompts: list[list[int]],
    cache_file: Path,
    max_new_tokens: int,
    upper: int | None = None,
) -> tuple[int, str]:
    """(batch size, how it was chosen: "policy" | "cached" | "one wave" | "measured" | "fallback")."""
    if setting != "auto":
        return int(setting), "policy"
    if not prompts or not all(hasattr(backend, a) for a in ("generate_tokens", "model")):
        return FALLBACK, "fallback"
    device = str(getattr(backend, "device", "cpu"))
    key = shape_key(backend.model, device, max_new_tokens)
    data = read_cache(cache_file)
    if (size := cached_pick(data, key)) is not None:
        return size, "cached"
    if upper is not None and upper <= SMALL_AUDIT:
        # Every item fits in one wave: a measurement would cost more than any batch size could save.
        decoders = stream_decoders(backend) or 1
        size = -(-upper // decoders)
        seq = max(len(p) for p in prompts) + max_new_tokens
        if size * decoders * row_bytes(backend.model, seq) <= memory_budget(device):
            return size, "one wave"
    size, rates, settled = measure(backend, prompts, memory_budget(device), upper or 1024)
    if not settled:  # a small audit could not try larger batches: its pick must not stand for big ones
        return size, "measured"
    data[key] = {
        "batch_size": size,
        "tokens_per_s": {str(k): round(v, 1) for k, v in rates.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_cache(cache_file, data)
    log.info("batch_size auto: %s (tokens/s by size: %s)", size, data[key]["tokens_per_s"])
    return size, "measured"
