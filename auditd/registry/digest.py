"""Content identity of a checkpoint: a digest over its files, so copies and touches don't re-audit."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files auditd itself writes beside a checkpoint; they are not part of its identity.
OWN_FILES = {"auditd-verdict.json", "auditd.json"}
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".incomplete", ".lock")


def checkpoint_files(location: Path) -> list[Path]:
    """The regular files that make up the checkpoint (recursive, hidden files and our own skipped)."""
    if location.is_file():
        return [location]
    files = []
    for p in sorted(location.rglob("*")):
        rel = p.relative_to(location)
        if any(part.startswith(".") for part in rel.parts) or p.name in OWN_FILES:
            continue
        if p.is_file():
            files.append(p)
    return files


def stat_signature(location: Path) -> tuple[str, float]:
    """(cheap signature of names, sizes and mtimes; newest mtime). Unchanged signature: no re-hash."""
    h = hashlib.sha256()
    newest = 0.0
    for p in checkpoint_files(location):
        st = p.stat()
        newest = max(newest, st.st_mtime)
        h.update(f"{p.relative_to(location) if location.is_dir() else p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest(), newest


def content_digest(location: Path, chunk: int = 1 << 20) -> str:
    outer = hashlib.sha256()
    for p in checkpoint_files(location):
        inner = hashlib.sha256()
        with p.open("rb") as f:
            while block := f.read(chunk):
                inner.update(block)
        rel = p.relative_to(location).as_posix() if location.is_dir() else p.name
        outer.update(f"{rel}\0{inner.hexdigest()}\n".encode())
    return "sha256:" + outer.hexdigest()
