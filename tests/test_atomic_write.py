"""store/atomic.py, the one atomic write every writer uses (images, calibration, attack work dirs,
verdicts in registry folders): exact mode, links never followed, nothing half-written or left over."""

from __future__ import annotations

import os

import pytest

from auditd.store.atomic import atomic_write


def test_replaces_whole_file_with_exact_mode(tmp_path):
    old = os.umask(0o077)  # a strict umask must not change the mode asked for
    try:
        target = atomic_write(tmp_path / "a" / "b" / "f.json", b"one", mode=0o644)
        atomic_write(target, b"two", mode=0o600)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"two" and (target.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.json"]


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").symlink_to(victim)
    atomic_write(tmp_path / "d" / "f", b"new")
    assert victim.read_text() == "keep" and not (tmp_path / "d" / "f").is_symlink()


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = atomic_write(tmp_path / "f", b"old")
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]
    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "..", b"x")
