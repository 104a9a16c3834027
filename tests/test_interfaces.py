"""The interfaces plugins and probes are recognised by: Protocols, not ids or private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from auditd import plugins
from auditd.backends.base import (
    ImageBackend,
    LocalCheckpoint,
    TextBackend,
    TrainableBackend,
    TrainableImageBackend,
    local_checkpoint_of,
)
from auditd.judges.base import ImageJudge, RewardImageJudge, TextJudge
from auditd.registry.checkpoint import RegistrySource

ROOT = Path(__file__).resolve().parent.parent / "auditd"


def test_builtin_plugins_are_recognised_by_their_protocols(tmp_path):
    fake = plugins.create("backend:fake")
    assert isinstance(fake, TextBackend)
    assert not isinstance(fake, (TrainableBackend, ImageBackend, TrainableImageBackend))
    refusal = plugins.create("judge:refusal")
    assert isinstance(refusal, TextJudge) and not isinstance(refusal, ImageJudge)
    assert isinstance(plugins.create("source:dir", root=tmp_path), RegistrySource)


def test_a_third_party_backend_is_local_by_declaration_not_by_id():
    class Mine:
        local_checkpoint = LocalCheckpoint(frozenset({"device"}))

    class Served:
        pass

    assert local_checkpoint_of(Mine) == LocalCheckpoint(frozenset({"device"}))
    assert local_checkpoint_of(type("Sub", (Mine,), {})) is not None  # inherited
    assert local_checkpoint_of(Served) is None and local_checkpoint_of(lambda **kw: None) is None
    local = {i for i in plugins.known_ids("backend") if local_checkpoint_of(plugins.resolve(i))}
    assert local == {"backend:hf", "backend:vllm", "backend:diffusers"}
    assert local_checkpoint_of(plugins.resolve("backend:hf")).options == {"device", "allow_pickle", "max_prompt_chars"}


def test_an_image_judge_without_the_reward_signal_is_not_a_reward_judge():
    class Half:
        id, modality = "half", "image"

        def score(self, items):
            return []

        def prepare(self, device=None, calibration_store=None):
            pass

        def calibration_info(self):
            return {}

    assert isinstance(Half(), ImageJudge) and not isinstance(Half(), RewardImageJudge)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


@pytest.mark.parametrize(
    "path", sorted(p for p in ROOT.rglob("*.py") if "runner" not in p.parts), ids=lambda p: str(p.relative_to(ROOT))
)
def test_nothing_outside_the_runner_uses_its_private_names(path):
    for module, names in _imports(path):
        if module.startswith("auditd.runner"):
            assert not [n for n in names if n.startswith("_")], f"{path}: private names of {module}"
        if "attacks" in path.parts and module.startswith("auditd.runner"):
            assert module in ("auditd.runner.errors", "auditd.runner.session"), f"{path} imports {module}"
    text = path.read_text()
    for private in ("._checkpoint_gate", "._progress(", "._store_batch", "._close_probe"):
        assert private not in text, f"{path} calls the runner's {private}"
