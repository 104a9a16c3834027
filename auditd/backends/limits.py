"""Resource limits checked before a loader touches a checkpoint.

A config.json is tiny in every real model, but an untrusted one can be a 2 GiB (sparse) file that a
JSON parser would read whole, or a valid config asking for a 1M x 2048 embedding that the loader
would allocate before reading any weights. So, before loading:
- every small config-like file (JSON, Jinja templates) is capped by size (`max_config_bytes`) and
  tokenizer files by `max_tokenizer_bytes`, from `stat` alone: nothing is read;
- the parameter count is estimated from config.json (embeddings, attention, MLP, experts) and from
  the safetensors / GGUF headers (exact tensor sizes), and the memory it needs at the load dtype is
  compared with `max_model_bytes`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from auditd.backends.files import checkpoint_files, relative_name
from auditd.backends.loading import CheckpointError, check_safetensors

TOKENIZER_FILES = {
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "vocab.txt",
    "sentencepiece.bpe.model",
}
CONFIG_SUFFIXES = (".json", ".jinja", ".yaml", ".yml")
DTYPE_SIZE = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float64": 8, "int8": 1}


class ModelTooLarge(CheckpointError):
    """Refused: the model would need more memory than the configured limit."""


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


def check_input_sizes(location: Path, max_config_bytes: int, max_tokenizer_bytes: int) -> None:
    """Refuse oversized config and tokenizer files, by size only (a sparse file is not read)."""
    if not Path(location).is_dir():
        return
    for f in checkpoint_files(location):
        name = f.name.lower()
        if name in TOKENIZER_FILES:
            limit, setting = max_tokenizer_bytes, "max_tokenizer_bytes"
        elif name.endswith(CONFIG_SUFFIXES):
            limit, setting = max_config_bytes, "max_config_bytes"
        else:
            continue
        size = f.stat().st_size
        if size > limit:
            raise CheckpointError(
                f"refused: {relative_name(location, f)} is {size:,} bytes > limit {limit:,} ({setting}); not read"
            )


def read_config(path: Path, max_bytes: int) -> dict:
    """A size-checked JSON config; {} when absent. Errors never quote the file."""
    if not path.is_file():
        return {}
    if path.stat().st_size > max_bytes:
        raise CheckpointError(f"refused: {path.name} is larger than {max_bytes:,} bytes (max_config_bytes)")
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(f"invalid {path.name}: not a JSON document") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"invalid {path.name}: not a JSON object")
    return data


def _num(cfg: dict, *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            continue
        return int(v)
    return None


def config_parameters(cfg: dict) -> int:
    """Parameters a decoder-style config asks for (0 when it does not say): embeddings (twice unless
    tied), per layer attention (q, o and grouped k, v) and the gated MLP, times experts for MoE."""
    text_config = cfg.get("text_config")
    cfg = text_config if isinstance(text_config, dict) else cfg
    vocab = _num(cfg, "vocab_size", "n_vocab") or 0
    hidden = _num(cfg, "hidden_size", "n_embd", "d_model", "dim") or 0
    if not hidden:
        return 0
    layers = _num(cfg, "num_hidden_layers", "n_layer", "num_layers", "n_layers") or 0
    heads = _num(cfg, "num_attention_heads", "n_head", "num_heads") or 1
    kv = _num(cfg, "num_key_value_heads", "n_kv_heads") or heads
    head_dim = _num(cfg, "head_dim") or max(1, hidden // heads)
    inter = _num(cfg, "intermediate_size", "n_inner", "ffn_dim", "moe_intermediate_size") or 4 * hidden
    experts = _num(cfg, "num_local_experts", "num_experts", "n_routed_experts") or 1
    positions = _num(cfg, "n_positions") or 0  # learned position embeddings (GPT-2 style)
    tied = cfg.get("tie_word_embeddings") is True
    embed = vocab * hidden * (1 if tied else 2) + positions * hidden
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim
    return embed + layers * (attention + 3 * hidden * inter * experts)


def header_parameters(files) -> int:
    """Exact element count of every tensor in the safetensors headers (headers only)."""
    total = 0
    for f in files:
        for name, info in check_safetensors(f).items():
            if name != "__metadata__":
                total += math.prod(int(d) for d in info["shape"])
    return total


_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_MAX_ITEMS = 10_000_000  # more keys, tensors or array items than any real file: a hostile header


def gguf_parameters(path: Path) -> int:
    """Element count of a GGUF file's tensors, from its tensor table. A small reader of its own: it
    skips the metadata (tokenizer arrays included) instead of decoding it, so it costs milliseconds
    where gguf.GGUFReader decodes every value (tens of seconds for a 49k-token vocabulary here)."""
    import struct

    size = path.stat().st_size

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"corrupt gguf file {path.name}: {why}")

    with path.open("rb") as f:

        def unpack(fmt: str):
            raw = f.read(struct.calcsize(fmt))
            if len(raw) < struct.calcsize(fmt):
                raise bad("truncated header")
            return struct.unpack(fmt, raw)[0]

        def count(what: str) -> int:
            n = unpack("<Q")
            if n > _GGUF_MAX_ITEMS:
                raise bad(f"{what} count out of range")
            return n

        def skip(n: int) -> None:
            if n > size or f.seek(n, 1) > size:
                raise bad("a length points past the end of the file")

        def skip_value(vtype: int) -> None:
            if vtype in _GGUF_FIXED:
                skip(_GGUF_FIXED[vtype])
            elif vtype == _GGUF_STRING:
                skip(unpack("<Q"))
            elif vtype == _GGUF_ARRAY:
                etype, n = unpack("<I"), count("array item")
                if etype in _GGUF_FIXED:
                    skip(n * _GGUF_FIXED[etype])
                else:
                    for _ in range(n):
                        skip_value(etype)
            else:
                raise bad("unknown metadata value type")

        if f.read(4) != b"GGUF":
            raise bad("not a GGUF file (bad magic)")
        if unpack("<I") < 2:
            return 0  # version 1 (32-bit counts): too old to matter; its load fails on its own
        n_tensors, n_kv = count("tensor"), count("metadata")
        for _ in range(n_kv):
            skip(unpack("<Q"))  # key
            skip_value(unpack("<I"))
        total = 0
        for _ in range(n_tensors):
            skip(unpack("<Q"))  # name
            n_dims = unpack("<I")
            if n_dims > 8:
                raise bad("tensor with more than 8 dimensions")
            total += math.prod(unpack("<Q") for _ in range(n_dims))
            skip(4 + 8)  # type, offset
        return total


def check_model_memory(
    folder: Path, dtype: str, limit: int, max_config_bytes: int, gguf_file: str | None = None
) -> int:
    """Refuse a model whose estimated parameters need more than `limit` bytes at the load dtype;
    returns the estimate in bytes."""
    from auditd.backends.loading import inspect_checkpoint

    files = inspect_checkpoint(folder)
    cfg = read_config(Path(folder) / "config.json", max_config_bytes) if Path(folder).is_dir() else {}
    from_config = config_parameters(cfg)
    from_headers = header_parameters(files.safetensors)
    ggufs = [f for f in files.gguf if gguf_file is None or f.name == gguf_file]
    from_gguf = sum(gguf_parameters(f) for f in ggufs)
    params = max(from_config, from_headers, from_gguf)
    if dtype == "auto":
        text_config = cfg.get("text_config")
        text_cfg = text_config if isinstance(text_config, dict) else cfg
        declared = text_cfg.get("torch_dtype") or text_cfg.get("dtype")
        dtype = declared if declared in DTYPE_SIZE and not ggufs else "float32"  # GGUF dequantizes to float32
    need = params * DTYPE_SIZE.get(dtype, 4)
    if need > limit:
        what = "config asks for" if from_config >= max(from_headers, from_gguf) else "weights hold"
        raise ModelTooLarge(
            f"refused: {what} {params / 1e9:.1f} B parameters ({_gib(need)} in {dtype}) > limit "
            f"{_gib(limit)} (max_model_bytes)"
        )
    return need
