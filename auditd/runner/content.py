"""Binding an audit to the exact bytes it audits.

A checkpoint's digest is taken when it is found; the weights are read later, when its audit starts,
and a registry folder can change in between (or during the audit). So the audit does not load the
registry folder: it takes a private, read-only snapshot of the checkpoint's files into the state
folder (a reflink where the filesystem supports it, else a copy), hashing the bytes as they are
copied with the same digest as discovery. A different digest ends the audit in error ("content
changed since it was found"); the loaders read only the snapshot. After the audit the registry copy
is hashed again: if it changed meanwhile, the verdict is error, not pass. The snapshot is removed at
the end (and stale ones at start-up).

Checkpoints larger than `snapshot_max_bytes` are not copied: they are re-hashed in place right
before loading and again after the audit (see docs/security.md for the window this leaves).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
from pathlib import Path

from auditd.backends.base import BackendError
from auditd.backends.limits import check_input_sizes
from auditd.registry.contain import allowed_roots, check_contained, open_contained
from auditd.registry.digest import CHUNK, DigestBuilder, checkpoint_files, content_digest, hash_stream, relative_name

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
HEADROOM = 64 << 20  # keep this much free beyond the snapshot, for the database and logs


class ContentChanged(BackendError):
    """The checkpoint's bytes are not the ones its digest was taken from."""


class SnapshotError(BackendError):
    """No snapshot could be taken (no room, unreadable file); one line, names the folder."""


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def _clone_or_copy(src_fd: int, dst_fd: int, size: int) -> tuple[str, bool]:
    """Put the first `size` bytes of src (its size when listed and checked for room) into dst, then
    hash dst: the hash is of the bytes now in the snapshot, whatever src does meanwhile. A reflink
    (FICLONE) shares extents and copies nothing; else copy_file_range copies in the kernel (several
    times faster than a read/write loop here: bench/bench_snapshot.py); else a plain loop.
    Returns (sha256 hex, reflinked)."""
    cloned = False
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        os.ftruncate(dst_fd, min(size, os.fstat(dst_fd).st_size))
        cloned = True
    except OSError as exc:
        if exc.errno not in _NO_CLONE:
            raise
        _copy(src_fd, dst_fd, size)
    with os.fdopen(os.dup(dst_fd), "rb", closefd=True) as dst:
        dst.seek(0)
        return hash_stream(dst), cloned


_NO_CLONE = (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EPERM)


def _copy(src_fd: int, dst_fd: int, size: int) -> None:
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src_fd, dst_fd, size - done, done, done)
            if n == 0:
                return  # shorter than listed: the digest will say so
            done += n
        return
    except OSError as exc:
        if exc.errno not in _NO_CLONE:
            raise
    while done < size:
        block = os.pread(src_fd, min(CHUNK, size - done), done)
        if not block:
            return
        os.pwrite(dst_fd, block, done)
        done += len(block)


def check_digest(actual: str, expected: str, when: str) -> None:
    if actual != expected:
        raise ContentChanged(f"content changed {when}: digest {actual} != {expected}")


class BoundContent:
    """The files an audit loads: `path` (a snapshot, or the original when re-hashing in place)."""

    def __init__(
        self,
        original: Path,
        root: Path,
        expected: str,
        snapshot_base: Path,
        audit_id: int,
        max_snapshot_bytes: int | None = None,
    ):
        self.original = Path(original)
        self.root = Path(root)
        self.expected = expected
        self.dir = Path(snapshot_base) / f"audit-{audit_id}"
        self.path = self.original
        self.snapshot = False
        self.reflinked = False  # whether the filesystem cloned the files instead of copying them
        check_contained(self.original, self.root)
        files = checkpoint_files(self.original)
        self.sizes = {f: f.stat().st_size for f in files}
        total = sum(self.sizes.values())
        if max_snapshot_bytes is not None and total > max_snapshot_bytes:
            self._verify(self._digest_in_place(), "since it was found")
            return
        self._take(files, total)

    # -- snapshot -------------------------------------------------------------------------------
    def _take(self, files: list[Path], total: int) -> None:
        remove_tree(self.dir)  # a previous attempt of this audit
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir.parent).free
        if total + HEADROOM > free:
            raise SnapshotError(
                f"no room for a snapshot of the checkpoint: {_gib(total)} needed, {_gib(free)} free "
                f"in {self.dir.parent} (free space, or set AUDITD_SNAPSHOT_DIR / "
                "AUDITD_SNAPSHOT_MAX_BYTES)"
            )
        self.dir.mkdir(mode=0o700)
        roots = allowed_roots(self.original, self.root)
        single = not self.original.is_dir()
        builder = DigestBuilder()
        try:
            for f in files:
                rel = relative_name(self.original, f)
                dest = self.dir / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                src_fd = open_contained(f, roots, rel)
                try:
                    dst_fd = os.open(dest, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    try:
                        file_hash, cloned = _clone_or_copy(src_fd, dst_fd, self.sizes[f])
                        builder.add(rel, file_hash)
                        self.reflinked = self.reflinked or cloned
                    finally:
                        os.close(dst_fd)
                finally:
                    os.close(src_fd)
                os.chmod(dest, 0o400)
        except OSError as exc:
            remove_tree(self.dir)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SnapshotError(
                    f"no room for a snapshot of the checkpoint in {self.dir.parent}: disk full "
                    "(free space, or set AUDITD_SNAPSHOT_DIR / AUDITD_SNAPSHOT_MAX_BYTES)"
                ) from None
            raise SnapshotError(f"cannot snapshot checkpoint {self.original}: {exc.strerror or exc}") from None
        except BaseException:
            remove_tree(self.dir)
            raise
        for d in sorted((p for p in self.dir.rglob("*") if p.is_dir()), reverse=True):
            os.chmod(d, 0o500)
        os.chmod(self.dir, 0o500)
        try:
            self._verify(builder.hexdigest(), "since it was found")
        except ContentChanged:
            remove_tree(self.dir)
            raise
        self.snapshot = True
        self.path = self.dir / self.original.name if single else self.dir

    def _digest_in_place(self) -> str:
        return content_digest(self.original, root=self.root)

    def _verify(self, actual: str, when: str) -> None:
        check_digest(actual, self.expected, when)

    # -- after the audit ------------------------------------------------------------------------
    def verify_after(self) -> None:
        """Hash the registry copy again: an audit of bytes no longer there must not pass."""
        try:
            actual = self._digest_in_place()
        except (OSError, BackendError) as exc:
            raise ContentChanged(f"content changed during the audit: {exc}") from None
        self._verify(actual, "during the audit")

    def unmask(self, message: str) -> str:
        """Errors name the registry path the user knows, not the private snapshot."""
        return message.replace(str(self.path), str(self.original)).replace(str(self.dir), str(self.original))

    def close(self) -> None:
        if self.snapshot:
            remove_tree(self.dir)
            self.snapshot = False


def remove_tree(path: Path) -> None:
    """Remove a (read-only) snapshot folder."""
    if not path.exists() and not path.is_symlink():
        return

    def make_writable(func, p, _exc):
        parent = os.path.dirname(p)
        os.chmod(parent, stat.S_IRWXU)
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, stat.S_IRWXU)
        func(p)

    for d in [path, *(p for p in path.rglob("*") if p.is_dir() and not p.is_symlink())]:
        try:
            os.chmod(d, stat.S_IRWXU)
        except OSError:
            pass
    shutil.rmtree(path, onerror=make_writable)


def remove_stale_snapshots(base: Path) -> int:
    """Start-up: snapshots left by a crash are removed (their audits take a fresh one on resume)."""
    if not base.is_dir():
        return 0
    n = 0
    for d in base.glob("audit-*"):
        try:
            remove_tree(d)
            n += 1
        except OSError as exc:
            log.warning("cannot remove stale snapshot %s: %s", d, exc)
    if n:
        log.info("removed %d stale audit snapshot(s) from %s", n, base)
    return n


def discard_snapshot(settings, audit_id: int) -> None:
    """For a supervisor whose audit process died without cleaning up: remove that audit's snapshot."""
    remove_tree(settings.snapshot_path / f"audit-{audit_id}")


def verify_in_place(checkpoint, settings) -> None:
    """For an audit that loaded nothing (all its samples reused from earlier audits of this digest):
    the files at the checkpoint's path must still hash to its digest, or the verdict is error."""
    meta = checkpoint.meta or {}
    if meta.get("refused"):
        raise BackendError(str(meta["refused"]))
    path = Path(checkpoint.path)
    root = Path(meta.get("root") or checkpoint.path)
    check_contained(path, root)
    check_input_sizes(path, settings.max_config_bytes, settings.max_tokenizer_bytes)
    try:
        actual = content_digest(path, root=root)
    except (OSError, BackendError) as exc:
        raise ContentChanged(f"content changed since it was found: {exc}") from None
    check_digest(actual, checkpoint.id, "since it was found")


def bind_content(checkpoint, settings, audit_id: int) -> BoundContent:
    """The content an audit of `checkpoint` loads, checked against its digest."""
    meta = checkpoint.meta or {}
    if meta.get("refused"):
        raise BackendError(str(meta["refused"]))
    root = Path(meta.get("root") or checkpoint.path)
    check_contained(Path(checkpoint.path), root)  # before even a stat of anything a link points at
    check_input_sizes(Path(checkpoint.path), settings.max_config_bytes, settings.max_tokenizer_bytes)
    return BoundContent(
        Path(checkpoint.path), root, checkpoint.id, settings.snapshot_path, audit_id, settings.snapshot_max_bytes
    )
