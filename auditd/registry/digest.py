"""Content identity of a checkpoint: a digest over its files, so copies and touches don't re-audit.

The digest is sha256 over one line per file, in path order: "<relative path>\\0<sha256 of its bytes>\\n".
`DigestBuilder` is the one place that format lives: the registry sources hash a folder with it, and
the audit's snapshot (auditd/runner/content.py) hashes the bytes it copies with it, so the two agree
exactly when the bytes do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from auditd.backends.files import checkpoint_files, relative_name  # noqa: F401  (relative_name: re-exported)

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".incomplete", ".lock")
CHUNK = 1 << 20


def stat_signature(location: Path) -> tuple[str, float]:
    """(cheap signature of names, sizes and mtimes; newest mtime). Unchanged signature: no re-hash."""
    h = hashlib.sha256()
    newest = 0.0
    for p in checkpoint_files(location):
        st = p.stat()
        newest = max(newest, st.st_mtime)
        h.update(f"{relative_name(location, p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), newest


class DigestBuilder:
    """Accumulates (relative path, file sha256) pairs, added in path order, into the checkpoint digest."""

    def __init__(self) -> None:
        self._outer = hashlib.sha256()

    def add(self, rel: str, file_sha256_hex: str) -> None:
        self._outer.update(f"{rel}\0{file_sha256_hex}\n".encode())

    def hexdigest(self) -> str:
        return "sha256:" + self._outer.hexdigest()


def hash_stream(f, chunk: int = CHUNK, sink=None) -> str:
    """sha256 of a binary stream; every block is also handed to `sink` (a copy) when given."""
    inner = hashlib.sha256()
    while block := f.read(chunk):
        inner.update(block)
        if sink is not None:
            sink(block)
    return inner.hexdigest()


def content_digest(location: Path, chunk: int = CHUNK, root: Path | None = None) -> str:
    """The checkpoint's digest. With `root`, links that resolve outside it are refused first
    (auditd.registry.contain.ContainmentError) and nothing outside it is read."""
    if root is not None:
        from auditd.registry.contain import check_contained

        check_contained(location, root)
    builder = DigestBuilder()
    for p in checkpoint_files(location):
        with p.open("rb") as f:
            builder.add(relative_name(location, p), hash_stream(f, chunk))
    return builder.hexdigest()
