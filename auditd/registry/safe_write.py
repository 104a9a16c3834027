"""Writing a file inside a folder an attacker may also write to (the checkpoint folder).

Every path component below the trusted base is opened with O_NOFOLLOW relative to its parent's
descriptor (openat-style), so a folder swapped for a link fails (ELOOP) instead of redirecting the
write. The content goes to a temp name with a random suffix created with O_CREAT|O_EXCL|O_NOFOLLOW
(a pre-planted file or link of that name makes the create fail, it is never followed), then is
renamed over the target: rename replaces a link planted at the target name, it does not follow it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


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


def write_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace `name` in the folder `dir_fd` with `data`."""
    if "/" in name or name in ("", ".", ".."):
        raise PermissionError(f"refusing file name {name!r}")
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"  # hidden: never part of a checkpoint's digest
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def write_beneath(base: Path, rel_dir: str | Path, name: str, data: bytes) -> Path:
    """Write base/rel_dir/name without following any link below `base`; returns the path written."""
    fd = open_dir_beneath(base, rel_dir)
    try:
        write_at(fd, name, data)
    finally:
        os.close(fd)
    return Path(base) / rel_dir / name
