"""Registry containment: nothing outside the registry root is read, hashed or written.

A checkpoint folder comes from people and pipelines auditd does not control. A symlink in it (or
the folder itself being one) could make the daemon read a file elsewhere on the machine (and quote
it in an error), hash it into a verdict, or write a verdict outside the registry. So every entry is
checked before anything is read: a link must resolve inside the root it was found under (for
`auditd audit PATH`: inside PATH). One layout is allowed to point elsewhere: a Hugging Face cache
snapshot (`models--<org>--<name>/snapshots/<rev>/` whose files link into the same repo's `blobs/`),
which users audit in place. The check is repeated on the file descriptor actually opened
(`open_contained`), so a link swapped in between the check and the read is refused too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from auditd.backends.loading import CheckpointError

VERDICT_FILE = "auditd-verdict.json"  # written by us, replaced (never followed) on write-back


class ContainmentError(CheckpointError):
    """A checkpoint refused because a link in it resolves outside its root; names the link only."""


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


def hf_blobs_dir(location: Path) -> Path | None:
    """The `blobs/` folder of the repo whose snapshot `location` is (Hugging Face cache layout)."""
    loc = Path(os.path.abspath(location))
    for candidate in (loc, *loc.parents):
        if candidate.parent.name == "snapshots" and candidate.parent.parent.name.startswith("models--"):
            return candidate.parent.parent / "blobs"
    return None


def allowed_roots(location: Path, root: Path) -> list[Path]:
    roots = [Path(root).resolve()]
    blobs = hf_blobs_dir(location)
    if blobs is not None and blobs.is_dir() and not blobs.is_symlink():
        roots.append(blobs.resolve())
    return roots


def _within(path: Path, roots: list[Path]) -> bool:
    return any(_inside(path, r) for r in roots)


def check_contained(location: Path, root: Path) -> None:
    """Refuse (ContainmentError) a checkpoint with a link resolving outside `root` (or, for an HF cache
    snapshot, outside the repo's blobs). Reads names and link targets only, never file contents."""
    location = Path(os.path.abspath(location))
    root_r = Path(root).resolve()
    roots = allowed_roots(location, root)
    if not _inside(location.resolve(), root_r):
        raise ContainmentError(
            f"refused: checkpoint {_link_name(location, root)} is a link that resolves "
            f"outside {root} (links must stay inside the registry)"
        )
    if not location.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(location, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in list(dirnames) + filenames:
            if name.startswith(".") or (base == location and name == VERDICT_FILE):
                continue  # never read: hidden files, and the verdict file we replace without following
            p = base / name
            if p.is_symlink() and not _within(p.resolve(), roots):
                rel = p.relative_to(location).as_posix()
                raise ContainmentError(
                    f"refused: {rel} in {_display(location, root)} is a link that resolves "
                    f"outside {root} (links must stay inside the registry)"
                )


def _display(location: Path, root: Path) -> str:
    """The checkpoint as the registry knows it: its path below the root, else its folder name."""
    try:
        rel = location.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        rel = "."
    return location.name if rel == "." else rel


def _link_name(location: Path, root: Path) -> str:
    """The first component of `location` below `root` that is a symlink (what the error names)."""
    root_abs = Path(os.path.abspath(root))
    try:
        parts = location.relative_to(root_abs).parts
    except ValueError:
        return str(location)
    p = root_abs
    for part in parts:
        p = p / part
        if p.is_symlink():
            return str(p.relative_to(root_abs))
    return str(location)


def open_contained(path: Path, roots: list[Path], display: str) -> int:
    """Open a checkpoint file for reading, refusing anything whose opened file lies outside `roots`
    or is not a regular file (a FIFO or device would hang or never end). Returns the fd."""
    real = Path(os.path.realpath(path))
    if not _within(real, roots):
        raise ContainmentError(f"refused: {display} is a link that resolves outside the registry")
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0))
    try:
        # What was opened, not what was checked: a parent folder swapped for a link meanwhile shows here.
        opened = Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.exists("/proc/self/fd") else real
        if not _within(opened, roots):
            raise ContainmentError(f"refused: {display} is a link that resolves outside the registry")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ContainmentError(f"refused: {display} is not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd
