"""Fixtures shared by the text-to-image tests: tiny pipelines and CLIPs built once per session,
a runner helper that audits one pipeline through the real AuditRunner."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP
    oversubscription made them 10x slower; restore the setting afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A random SD-layout pipeline (epsilon prediction, per-channel GroupNorm), 32x32 images."""
    from auditd.testing.t2i import make_tiny_sd

    return make_tiny_sd(tmp_path_factory.mktemp("t2i") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random-init open_clip CLIP (pretrained=None) as a local-dir snapshot."""
    from auditd.testing.t2i import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp("t2i") / "tiny-clip")


@pytest.fixture(scope="session")
def color_clip(tmp_path_factory) -> Path:
    """A CLIP whose answer is known: p_unsafe(t2i_violence) rises with the image's redness."""
    from auditd.testing.t2i import make_color_clip

    return make_color_clip(tmp_path_factory.mktemp("t2i") / "color-clip", target_category="t2i_violence")


def run_one_audit(home: Path, policy_path: Path, pipeline: Path, progress=None, stop=None, kind: str = "t2i"):
    """Queue and run one audit of `pipeline` with the real runner; returns (engine, audit id, outcome)."""
    import threading

    from auditd.registry.checkpoint import Checkpoint
    from auditd.registry.digest import content_digest
    from auditd.runner.audit import AuditContext
    from auditd.scheduler import intake, queue
    from auditd.settings import Settings
    from auditd.store.db import open_db, session

    settings = Settings(home=home, policy=str(policy_path))
    engine = open_db(settings.database_url)
    digest = content_digest(pipeline)
    with session(engine) as s:
        intake.ingest(s, Checkpoint(id=digest, model="tiny-sd", kind=kind, path=str(pipeline), source="test"))
        s.commit()
    run, _ = queue.enqueue(engine, digest, request_key=f"test:{uuid.uuid4()}", policy=settings.policy)
    ctx = AuditContext(engine, settings, stop=stop or threading.Event(), progress=progress)
    return engine, settings, run.id, resume_audit(engine, ctx, run.id)


def resume_audit(engine, ctx, audit_id: int):
    from auditd.runner.audit import run_audit
    from auditd.scheduler import queue

    assert queue.claim(engine, audit_id, queue.worker_id()) is not None
    return run_audit(ctx, audit_id)
