"""Shared fixtures: tiny real models (built once per session), temp homes, policy files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub, ever
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama saved as safetensors with a tokenizer trained on the fly."""
    from auditd.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def copy_model(tiny_model_dir):
    def _copy(dest: Path) -> Path:
        shutil.copytree(tiny_model_dir, dest)
        return dest

    return _copy


def write_policy(folder: Path, text: str, name: str = "test") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def wait_for(cond, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


QUICK_POLICY = """
name: quick
probes:
  text:
    - id: policy
      limit_per_category: 2
    - id: overrefusal
      limit_per_category: 4
generation: {max_new_tokens: 8, batch_size: 8}
"""


def queue_text_audit(
    policy_dir: Path, home: Path, model_path: Path, checkpoint_id: str = "sha256:t", model: str = "m", **policy_changes
):
    """QUICK_POLICY with `policy_changes`, written to `policy_dir`; one text checkpoint ingested,
    queued and claimed in `home`'s database. Returns (AuditContext, audit id)."""
    import yaml

    from auditd.registry.checkpoint import Checkpoint
    from auditd.runner.audit import AuditContext
    from auditd.scheduler import intake, queue
    from auditd.settings import Settings
    from auditd.store.db import open_db, session

    doc = yaml.safe_load(QUICK_POLICY)
    doc.update(policy_changes)
    policy = write_policy(policy_dir, yaml.safe_dump(doc))
    settings = Settings(home=home, policy=str(policy))
    engine = open_db(settings.database_url)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id=checkpoint_id, model=model, kind="text", path=str(model_path), source="test"))
        s.commit()
    run, _ = queue.enqueue(engine, checkpoint_id, policy=str(policy))
    queue.claim(engine, run.id, "test:1")
    return AuditContext(engine, settings), run.id
