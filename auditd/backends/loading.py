"""Checks run on an untrusted checkpoint before any loader touches it.

Checkpoints arrive from a registry nobody here controls, so nothing is loaded on faith:
- pickle weights (*.bin, *.pt, *.pth, *.ckpt, *.pkl) can run code when unpickled; a checkpoint that
  has only those is refused unless the operator sets `allow_pickle`;
- every *.safetensors header is parsed here (8-byte little-endian length, then a JSON header) and
  each tensor's byte range is checked against the file size, so a truncated or garbled file fails
  with a one-line `CorruptCheckpointError` instead of a stack trace deep inside a loader;
- every *.gguf file must start with the GGUF magic and a known version;
- remote code is never trusted: every loader passes `trust_remote_code=False` explicitly.
These checks read headers only (no torch, no tensor data), so they cost milliseconds.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from auditd.backends.base import BackendError

Format = Literal["safetensors", "gguf", "diffusers", "pickle", "none"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (1, 2, 3)
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


class CheckpointError(BackendError):
    """A checkpoint was refused before loading; the message is one line and names the path."""


class UnsafeCheckpointError(CheckpointError):
    """Refused: only pickle weights (code execution on load), or no weights we recognise."""


class CorruptCheckpointError(CheckpointError):
    """Refused: a weights file is truncated or its header is invalid."""


@dataclass(frozen=True)
class CheckpointFiles:
    path: Path  # the folder or file inspected
    format: Format  # what a loader should treat it as; "pickle" and "none" are refused by default
    safetensors: tuple[Path, ...] = ()  # every *.safetensors found (subfolders too, for diffusers)
    gguf: tuple[Path, ...] = ()  # every *.gguf found
    pickle: tuple[Path, ...] = ()  # every pickle weights file found
    has_config: bool = False  # config.json present (HF transformers layout)
    components: tuple[str, ...] = field(default=())  # diffusers: subfolders named in model_index.json


def _files(folder: Path, suffixes: tuple[str, ...], depth: int) -> tuple[Path, ...]:
    found = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffixes)]
    if depth > 0:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.extend(_files(sub, suffixes, depth - 1))
    return tuple(sorted(found))


def inspect_checkpoint(path: str | Path) -> CheckpointFiles:
    """Classify a checkpoint folder (or a single weights file) by the files it holds."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.is_file():
        name = p.name.lower()
        if name.endswith(".gguf"):
            return CheckpointFiles(p, "gguf", gguf=(p,))
        if name.endswith(".safetensors"):
            return CheckpointFiles(p, "safetensors", safetensors=(p,))
        if name.endswith(PICKLE_SUFFIXES):
            return CheckpointFiles(p, "pickle", pickle=(p,))
        return CheckpointFiles(p, "none")
    if (p / "model_index.json").is_file():
        try:
            index = json.loads((p / "model_index.json").read_text())
        except OSError as e:
            raise CorruptCheckpointError(f"unreadable model_index.json in {p}: {e.strerror or e}") from None
        except ValueError:  # the message of a decode error can quote the file: not kept
            raise CorruptCheckpointError(f"invalid model_index.json in {p}: not a JSON document") from None
        if not isinstance(index, dict):
            raise CorruptCheckpointError(f"invalid model_index.json in {p}: not a JSON object")
        components = tuple(sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list)))
        st = _files(p, (".safetensors",), depth=1)
        pk = _files(p, PICKLE_SUFFIXES, depth=1)
        return CheckpointFiles(p, "diffusers", safetensors=st, pickle=pk, components=components)
    st = _files(p, (".safetensors",), depth=0)
    gg = _files(p, (".gguf",), depth=0)
    pk = _files(p, PICKLE_SUFFIXES, depth=0)
    has_config = (p / "config.json").is_file()
    fmt: Format = "safetensors" if st else "gguf" if gg else "pickle" if pk else "none"
    return CheckpointFiles(p, fmt, safetensors=st, gguf=gg, pickle=pk, has_config=has_config)


def check_safetensors(path: str | Path) -> dict:
    """Parse a safetensors header and check every tensor's bytes lie inside the file; returns the header."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptCheckpointError(f"corrupt safetensors file {p}: {size} bytes, shorter than its header")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise CorruptCheckpointError(
                    f"corrupt safetensors file {p}: its header length does not fit the file ({size} bytes)"
                )
            raw = f.read(n)
    except OSError as e:
        raise CorruptCheckpointError(f"unreadable safetensors file {p}: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptCheckpointError(f"corrupt safetensors file {p}: header is not valid JSON") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"corrupt safetensors file {p}: header is not a JSON object")
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            shape, dtype = info["shape"], info["dtype"]
            count = 1
            for d in shape:
                count *= int(d)
            ok = isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(f"corrupt safetensors file {p}: bad entry for tensor {_quote(name)}") from None
        if not ok:
            raise CorruptCheckpointError(f"corrupt safetensors file {p}: bad offsets for tensor {_quote(name)}")
        if end > data_size:
            raise CorruptCheckpointError(
                f"corrupt safetensors file {p}: tensor {_quote(name)} ends at byte {end} of a {data_size}-byte "
                "data section (truncated file?)"
            )
        if dtype in DTYPE_BYTES and (end - begin) != count * DTYPE_BYTES[dtype]:
            raise CorruptCheckpointError(
                f"corrupt safetensors file {p}: tensor {_quote(name)} has {end - begin} bytes for shape "
                f"{_quote(shape)} {_quote(dtype)}"
            )
    return header


def _quote(name: str) -> str:
    """A tensor name from an untrusted header, as a short printable quote."""
    text = "".join(c if c.isprintable() else "?" for c in str(name))
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def check_gguf(path: str | Path) -> int:
    """Check the GGUF magic and version of a file; returns the version."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(24)  # magic, version, tensor count, metadata count
    except OSError as e:
        raise CorruptCheckpointError(f"unreadable gguf file {p}: {e.strerror or e}") from None
    if head[:4] != GGUF_MAGIC:
        raise CorruptCheckpointError(f"corrupt gguf file {p}: not a GGUF file (bad magic)")
    if len(head) < 24:
        raise CorruptCheckpointError(f"corrupt gguf file {p}: truncated header")
    (version,) = struct.unpack("<I", head[4:8])
    if version not in GGUF_VERSIONS:
        raise CorruptCheckpointError(f"corrupt gguf file {p}: unknown version {version}")
    return version


def _check_shard_index(folder: Path) -> None:
    for index in folder.glob("*.safetensors.index.json"):
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = set(weight_map.values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CorruptCheckpointError(f"corrupt shard index {index}") from None
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            raise CorruptCheckpointError(f"checkpoint {folder} is missing shard(s) {', '.join(missing)}")


def check_loadable(path: str | Path, allow_pickle: bool = False, gguf_file: str | None = None) -> CheckpointFiles:
    """Refuse a checkpoint that is unsafe or corrupt; returns what `inspect_checkpoint` found.

    `gguf_file` limits the GGUF check to that file of the folder (the one a loader will read).
    """
    files = inspect_checkpoint(path)
    p = files.path
    if files.format == "none":
        raise UnsafeCheckpointError(
            f"no model weights in {p} (expected *.safetensors, *.gguf or a diffusers model_index.json)"
        )
    if files.format == "pickle" and not allow_pickle:
        names = ", ".join(f.name for f in files.pickle[:3])
        raise UnsafeCheckpointError(
            f"refusing pickle-only weights in {p} ({names}): unpickling can run code; "
            "convert to safetensors or set allow_pickle=True"
        )
    if files.format == "diffusers" and not allow_pickle:
        st_dirs = {f.parent for f in files.safetensors}
        unsafe = sorted({f.parent.name for f in files.pickle if f.parent not in st_dirs})
        if unsafe:
            raise UnsafeCheckpointError(
                f"refusing pickle-only weights for component(s) {', '.join(unsafe)} of {p}; "
                "convert to safetensors or set allow_pickle=True"
            )
    for f in files.safetensors:
        check_safetensors(f)
    if files.format in ("safetensors", "diffusers") and p.is_dir():
        _check_shard_index(p)
        for sub in {f.parent for f in files.safetensors} - {p}:
            _check_shard_index(sub)
    if files.format == "gguf" or gguf_file is not None:
        targets = [f for f in files.gguf if gguf_file is None or f.name == gguf_file]
        if gguf_file is not None and not targets:
            raise CheckpointError(f"gguf file {gguf_file} not found in {p}")
        for f in targets:
            check_gguf(f)
    return files
