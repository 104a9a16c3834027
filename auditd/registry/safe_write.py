"""Writing a file inside a folder an attacker may also write to (the checkpoint folder).

Every path component below the trusted base is opened with O_NOFOLLOW relative to its parent's
descriptor (openat-style), so a folder swapped for a link fails (ELOOP) instead of redirecting the
write. The write itself is store/atomic.py's `write_at`: a temp name created with
O_CREAT|O_EXCL|O_NOFOLLOW (never following a planted link), fsynced, then renamed over the target
(rename replaces a link planted at the target name, it does not follow it).
"""

from __future__ import annotations

import os
from pathlib import Path

from auditd.store.atomic import DIR_FLAGS, write_at


def open_dir_beneath(base: Path, rel: str | Path = "") -> int:
    """A descriptor of base/rel, following no link below `base` (base itself is the operator's)."""
    fd = os.open(base, DIR_FLAGS)
    try:
        for part in Path(rel).parts:
            if part in ("", ".", "..") or "/" in part:
                raise PermissionError(f"refusing path component {part!r} below {base}")
            nxt = os.open(part, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_beneath(base: Path, rel_dir: str | Path, name: str, data: bytes) -> Path:
    """Write base/rel_dir/name without following any link below `base`; returns the path written."""
    fd = open_dir_beneath(base, rel_dir)
    try:
        write_at(fd, name, data)
    finally:
        os.close(fd)
    return Path(base) / rel_dir / name
