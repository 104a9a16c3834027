"""The pieces behind content binding and containment, on real files (no daemon): the audit snapshot,
the re-verification after the audit, the no-follow write-back, the bounded template renderer, and
`auditd audit PATH` refusing links out of PATH."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from auditd.registry.contain import ContainmentError, check_contained
from auditd.registry.digest import content_digest
from auditd.registry.safe_write import write_beneath
from auditd.runner.content import BoundContent, ContentChanged, SnapshotError, remove_stale_snapshots


def make_checkpoint(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    (folder / "sub" / "extra.json").write_text("{}")
    return folder


def test_snapshot_is_private_read_only_matches_the_digest_and_is_removed(tmp_path):
    ck = make_checkpoint(tmp_path / "reg" / "ck")
    digest = content_digest(ck)
    bound = BoundContent(ck, tmp_path / "reg", digest, tmp_path / "snaps", audit_id=7)
    assert bound.path == tmp_path / "snaps" / "audit-7" and content_digest(bound.path) == digest
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [bound.path, *bound.path.rglob("*")]}
    assert modes == {
        "audit-7": 0o500,
        "config.json": 0o400,
        "model.safetensors": 0o400,
        "sub": 0o500,
        "extra.json": 0o400,
    }  # read-only, for the audit too
    (ck / "model.safetensors").write_bytes(b"swapped")  # the registry copy changes; the snapshot does not
    assert content_digest(bound.path) == digest
    with pytest.raises(ContentChanged, match="content changed during the audit: digest sha256:"):
        bound.verify_after()
    bound.close()
    assert not (tmp_path / "snaps" / "audit-7").exists()


def test_content_changed_before_the_snapshot_is_refused_and_leaves_nothing(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    digest = content_digest(ck)
    (ck / "model.safetensors").write_bytes(b"truncated")
    changed = f"content changed since it was found: digest sha256:[0-9a-f]+ != {digest}"
    with pytest.raises(ContentChanged, match=changed):
        BoundContent(ck, ck, digest, tmp_path / "snaps", audit_id=1)
    assert not (tmp_path / "snaps" / "audit-1").exists()


def test_large_checkpoints_are_verified_by_rehash_in_place(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    bound = BoundContent(ck, ck, content_digest(ck), tmp_path / "snaps", audit_id=2, max_snapshot_bytes=100)
    assert bound.path == ck and not (tmp_path / "snaps" / "audit-2").exists()
    (ck / "sub" / "extra.json").write_text('{"changed": 1}')
    with pytest.raises(ContentChanged):
        bound.verify_after()


def test_no_room_for_a_snapshot_is_a_clear_error(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        ck = make_checkpoint(tmp_path / "ck")
        no_room = r"no room for a snapshot of the checkpoint: .* free in .*AUDITD_SNAPSHOT_DIR"
        with pytest.raises(SnapshotError, match=no_room):
            BoundContent(ck, ck, content_digest(ck), small, audit_id=3)
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_stale_snapshots_are_removed_at_start(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")
    BoundContent(ck, ck, content_digest(ck), tmp_path / "snaps", audit_id=4)  # never closed: a crash
    assert remove_stale_snapshots(tmp_path / "snaps") == 1 and list((tmp_path / "snaps").iterdir()) == []


def test_hf_cache_snapshot_may_link_into_its_own_blobs_only(tmp_path):
    repo = tmp_path / "models--org--m"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs" / "b1").write_text('{"model_type": "llama"}')
    (snap / "config.json").symlink_to("../../blobs/b1")
    check_contained(snap, snap)  # audited in place (auditd audit SNAPSHOT): the blobs are allowed
    bound = BoundContent(snap, snap, content_digest(snap), tmp_path / "snaps", audit_id=5)
    assert (bound.path / "config.json").read_text() == '{"model_type": "llama"}'
    bound.close()
    other = tmp_path / "models--org--other" / "blobs"
    other.mkdir(parents=True)
    (other / "b2").write_text("x")
    (snap / "tokenizer.json").symlink_to(other / "b2")  # another repo's blob: outside
    with pytest.raises(ContainmentError, match="refused: tokenizer.json in a+ is a link that resolves outside"):
        check_contained(snap, snap)


def test_write_back_never_follows_a_planted_link(tmp_path):
    root, outside = tmp_path / "reg", tmp_path / "outside"
    (root / "ck").mkdir(parents=True)
    outside.mkdir()
    victim = outside / "victim"
    victim.write_text("VICTIM")
    (root / "ck" / "auditd-verdict.json").symlink_to(victim)
    write_beneath(root, "ck", "auditd-verdict.json", b"{}")
    assert victim.read_text() == "VICTIM" and (root / "ck" / "auditd-verdict.json").read_text() == "{}"
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OSError):  # ELOOP: the folder is a link
        write_beneath(root, "linked", "auditd-verdict.json", b"{}")
    assert sorted(p.name for p in outside.iterdir()) == ["victim"]
    with pytest.raises(PermissionError):
        write_beneath(root, "../outside", "auditd-verdict.json", b"{}")


def test_bounded_template_renders_like_transformers_and_caps_repetition():
    from auditd.backends.chat_template import TemplateLimitError, render_chat
    from auditd.testing import train_tokenizer

    tok = train_tokenizer()
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    assert render_chat(tok, chat, 10_000) == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    tok.chat_template = "{{ messages[-1]['content'] * 10000000 }}"
    with pytest.raises(TemplateLimitError, match="repeats a value 10,000,000 times"):
        render_chat(tok, chat, 10**9)
    # A template that loops without output is stopped by the audit's deadline only; the stage marker
    # lets the supervisor say where ("timeout after 30 s in chat template rendering").
    from auditd import stage

    seen = []
    stage.add_listener(seen.append)
    try:
        tok.chat_template = "{{ raise_exception('bad template') }}"
        with pytest.raises(TemplateLimitError, match="bad template"):
            render_chat(tok, chat, 1000)
    finally:
        stage.remove_listener(seen.append)
    assert "chat template rendering" in seen


def test_cli_audit_refuses_a_link_out_of_path(tmp_path, tiny_model_dir):
    ck = Path(shutil.copytree(tiny_model_dir, tmp_path / "ck"))
    (tmp_path / "elsewhere.json").write_text((ck / "config.json").read_text())
    (ck / "config.json").unlink()
    (ck / "config.json").symlink_to(tmp_path / "elsewhere.json")
    res = subprocess.run(
        [sys.executable, "-m", "auditd.cli", "audit", str(ck), "--home", str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    assert "refused: config.json in ck is a link that resolves outside" in res.stderr + res.stdout


def _gguf(path: Path, dims: list[int], vocab: int = 3) -> Path:
    """A minimal GGUF v3 header: one string-array metadata entry (a vocabulary) and one tensor."""
    import struct

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    meta = s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, vocab) + b"".join(s(f"t{i}") for i in range(vocab))
    tensor = s("token_embd.weight") + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + meta + tensor + struct.pack("<IQ", 0, 0))
    return path


def test_gguf_parameters_are_counted_from_the_tensor_table_before_loading(tmp_path):
    from auditd.backends.limits import ModelTooLarge, check_model_memory, gguf_parameters

    assert gguf_parameters(_gguf(tmp_path / "small.gguf", [32, 8])) == 256
    folder = tmp_path / "big"
    folder.mkdir()
    _gguf(folder / "m.gguf", [2048, 1_000_000])
    too_large = r"refused: weights hold 2.0 B parameters \(7.6 GiB in float32\) > limit 1.0 GiB"
    with pytest.raises(ModelTooLarge, match=too_large):
        check_model_memory(folder, "auto", 1 << 30, 16 << 20)
    hostile = tmp_path / "hostile.gguf"
    hostile.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (2**62).to_bytes(8, "little") * 2)
    with pytest.raises(Exception, match="corrupt gguf file hostile.gguf: tensor count out of range"):
        gguf_parameters(hostile)
