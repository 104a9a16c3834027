"""The `dir` registry source: layouts, content identity, lineage, persistence across restarts."""

import json
import os
import shutil
import time

from auditd.registry.dir import DirSource
from auditd.store.db import open_db, session


def poll(engine, src):
    with session(engine) as s:
        found = src.poll(s)
        s.commit()
    return found


def make(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_layouts_and_kinds(tmp_path):
    root = tmp_path / "reg"
    make(root / "llm" / "v1", {"config.json": b"{}", "model.safetensors": b"x"})
    make(root / "gguf-model", {"m.Q4.gguf": b"GGUF"})
    make(root / "sd" / "v1", {"model_index.json": b"{}"})
    make(root / "sd" / "v1" / "unet", {"diffusion_pytorch_model.safetensors": b"u"})
    make(root / "old", {"config.json": b"{}", "pytorch_model.bin": b"p"})
    make(root / "notes", {"README.md": b"no weights here"})
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    found = {c.metadata["location"]: c for c in poll(engine, DirSource(root, settle_s=0))}
    assert set(found) == {"llm/v1", "gguf-model", "sd/v1", "old"}
    assert found["sd/v1"].kind == "t2i" and found["llm/v1"].kind == "text"
    assert found["llm/v1"].model == "llm"  # nested layout: root/model/version
    assert found["gguf-model"].model == "gguf-model"
    assert all(c.id.startswith("sha256:") for c in found.values())


def test_identity_is_content_touch_and_copy_are_not_new(tmp_path):
    root = tmp_path / "reg"
    ck = make(root / "m" / "v1", {"config.json": b"{}", "model.safetensors": b"weights-1"})
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    src = DirSource(root, settle_s=0)
    first = poll(engine, src)
    assert len(first) == 1
    assert poll(engine, src) == []  # nothing changed
    os.utime(ck / "model.safetensors", (time.time() + 5, time.time() + 5))  # touched
    assert poll(engine, src) == []
    shutil.copytree(ck, tmp_path / "tmpcopy")
    shutil.rmtree(ck)
    shutil.copytree(tmp_path / "tmpcopy", ck)  # re-copied: new inodes and mtimes, same bytes
    assert poll(engine, src) == []
    (ck / "model.safetensors").write_bytes(b"weights-2")  # changed content: a new checkpoint
    changed = poll(engine, src)
    assert len(changed) == 1 and changed[0].id != first[0].id


def test_seen_checkpoints_survive_a_restart(tmp_path):
    root = tmp_path / "reg"
    make(root / "m" / "v1", {"config.json": b"{}", "model.safetensors": b"w"})
    url = f"sqlite:///{tmp_path}/db.sqlite"
    assert len(poll(open_db(url), DirSource(root, settle_s=0))) == 1
    # a new process: new engine, new source object, same database
    assert poll(open_db(url), DirSource(root, settle_s=0)) == []


def test_a_folder_still_being_written_waits(tmp_path):
    root = tmp_path / "reg"
    make(root / "m" / "v1", {"config.json": b"{}", "model.safetensors": b"w"})
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    assert poll(engine, DirSource(root, settle_s=60)) == []  # files are seconds old
    make(root / "m" / "v2", {"config.json": b"{}", "model.safetensors.part": b"w"})
    found = poll(engine, DirSource(root, settle_s=0))
    assert [c.metadata["location"] for c in found] == ["m/v1"]  # the .part copy is skipped


def test_lineage_names_model_and_parent(tmp_path):
    root = tmp_path / "reg"
    make(root / "base", {"config.json": b"{}", "model.safetensors": b"parent"})
    child = make(root / "ft", {"config.json": b"{}", "model.safetensors": b"child"})
    (child / "auditd.json").write_text(json.dumps({"model": "chat", "parent": "base"}))
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    found = {c.metadata["location"]: c for c in poll(engine, DirSource(root, settle_s=0))}
    assert found["ft"].model == "chat"
    assert found["ft"].parent == found["base"].id


def test_verdict_write_back_is_not_part_of_identity(tmp_path):
    root = tmp_path / "reg"
    ck = make(root / "m", {"config.json": b"{}", "model.safetensors": b"w"})
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    src = DirSource(root, settle_s=0)
    [cp] = poll(engine, src)
    path = src.write_verdict(cp.path, cp.id, {"outcome": "pass"})
    assert path == ck / "auditd-verdict.json" and json.loads(path.read_text())["outcome"] == "pass"
    assert poll(engine, src) == []
    side = DirSource(root, settle_s=0, verdict_dir=tmp_path / "verdicts")
    assert side.write_verdict(cp.path, cp.id, {"outcome": "block"}).parent == tmp_path / "verdicts"


def test_a_child_listed_before_its_parent_still_names_it_and_comes_after(tmp_path):
    root = tmp_path / "reg"
    child = make(root / "a-child", {"config.json": b"{}", "model.safetensors": b"child"})
    (child / "auditd.json").write_text(json.dumps({"parent": "../z-parent"}))
    make(root / "z-parent", {"config.json": b"{}", "model.safetensors": b"parent"})
    engine = open_db(f"sqlite:///{tmp_path}/db.sqlite")
    found = poll(engine, DirSource(root, settle_s=0))
    assert [c.metadata["location"] for c in found] == ["z-parent", "a-child"]
    assert found[1].parent == found[0].id
