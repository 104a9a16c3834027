"""The one atomic file write: a crash leaves the old file or the new one, never half of one.

The content goes to a hidden temp name with a random suffix, created with O_CREAT|O_EXCL|O_NOFOLLOW
relative to the folder's descriptor (a pre-planted file or link of that name makes the create
fail, it is never followed), is written in full and fsynced, gets exactly `mode` (whatever the
umask), then is renamed over the target: rename replaces a link planted at the target name, it
does not follow it. Writers into folders an attacker may also write to open the folder with
registry/safe_write.py's `open_dir_beneath` first.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def write_at(dir_fd: int, name: str, data: bytes, mode: int = 0o644) -> None:
    """Atomically replace `name` in the folder `dir_fd` with `data`."""
    if "/" in name or name in ("", ".", ".."):
        raise PermissionError(f"refusing file name {name!r}")
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"  # hidden: never part of a checkpoint's digest
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)  # a buffered write writes it all (os.write may write less than asked)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def atomic_write(path: str | Path, data: bytes, mode: int = 0o644) -> Path:
    """Atomically replace `path` with `data`, creating its folders. For paths that are the daemon's
    own (its home, a work dir): links in the folder path are followed, the file name never is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.parent, DIR_FLAGS)
    try:
        write_at(fd, path.name, data, mode)
    finally:
        os.close(fd)
    return path
