"""Which files make up a checkpoint: what the loaders' size checks (auditd/backends/limits.py) and
the registry's content digest (auditd/registry/digest.py) both walk, so they agree on one list."""

from __future__ import annotations

from pathlib import Path

# Files auditd itself writes beside a checkpoint; they are not part of its identity.
OWN_FILES = {"auditd-verdict.json", "auditd.json"}


def checkpoint_files(location: Path) -> list[Path]:
    """The regular files that make up the checkpoint (recursive, hidden files and our own skipped).
    Symlinked sub-folders are not descended into (pathlib's rglob does not follow them)."""
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


def relative_name(location: Path, p: Path) -> str:
    return p.relative_to(location).as_posix() if location.is_dir() else p.name
