"""Hostile checkpoints against a running daemon with the process executor: one that needs more
memory than the audit child may have, one whose chat template loops forever. Each ends as a stored
error naming what happened and where; the daemon lives on, and SIGTERM stops it within a bounded
time even while an audit hangs."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
from safetensors.torch import load_file, save_file

from tests.conftest import wait_for
from tests.reliability.procs import Daemon, add_checkpoint, since

MEMORY_LIMIT_MB = 6144  # torch alone maps ~3.8 GB of address space; the hog below asks for 3.8 GB more
HUNG_TIMEOUT_S = 40  # the child's imports and model load count too: ~8 s on 2 idle cores, 30 s loaded
GRACE_S = 3

POLICY = """
name: limits
probes:
  text:
    - id: policy
      limit_per_category: 1
generation: {max_new_tokens: 4, batch_size: 4}
budget: {audit_timeout_s: %s}
"""
# 10^10 iterations that write nothing: no output cap can stop it, only the deadline.
ENDLESS_TEMPLATE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ 'x' }}"


def memory_hog(model_dir, dest):
    """The tiny model with a 30M-token vocabulary whose embedding is not in the file: loading it
    allocates 30M x 32 floats (3.8 GB) beyond what torch itself maps."""
    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config["vocab_size"] = 30_000_000
    (dest / "config.json").write_text(json.dumps(config))
    weights = {k: v for k, v in load_file(dest / "model.safetensors").items() if "embed_tokens" not in k}
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def endless_template(model_dir, dest):
    shutil.copytree(model_dir, dest)
    (dest / "chat_template.jinja").write_text(ENDLESS_TEMPLATE)
    tok = json.loads((dest / "tokenizer_config.json").read_text())
    tok.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(tok))
    return dest


def hanging_stage(d: Daemon, audit: int = 1) -> str | None:
    """The template-rendering stage the audit's child reported, if it got that far."""
    marks = [e["msg"].rsplit(": stage ", 1)[1] for e in d.log() if e["msg"].startswith(f"audit {audit}: stage ")]
    return next((m for m in reversed(marks) if m in ("generate", "chat template rendering")), None)


def by_model(d: Daemon) -> dict:
    from sqlmodel import select

    from auditd.store.db import session
    from auditd.store.models import AuditRun, CheckpointRow

    with session(d.engine) as s:
        return {
            cp.model: a
            for a, cp in s.exec(
                select(AuditRun, CheckpointRow).join(CheckpointRow, CheckpointRow.id == AuditRun.checkpoint_id)
            )
        }


@pytest.mark.slow
def test_child_over_its_memory_limit_is_an_error_and_the_next_checkpoint_is_audited(tmp_path, tiny_model_dir):
    registry = tmp_path / "registry"
    registry.mkdir()
    policy = tmp_path / "limits.yaml"
    policy.write_text(POLICY % 600)
    d = Daemon(tmp_path, registry, policy, AUDITD_CHILD_MEMORY_MB=str(MEMORY_LIMIT_MB)).start()
    try:
        memory_hog(tiny_model_dir, tmp_path / "hog").rename(registry / "hog")
        a = wait_for(
            lambda: (r := by_model(d).get("hog")) and r.status not in ("queued", "running") and r,
            180,
            interval=0.3,
            what="the memory hog's audit",
        )
        print(f"\nmemory hog: {a.error}")
        assert a.status == "error" and a.outcome == "error" and "\n" not in a.error
        assert f"killed: memory limit {MEMORY_LIMIT_MB / 1024:.3g} GiB exceeded in load" in a.error
        assert json.loads((registry / "hog" / "auditd-verdict.json").read_text())["outcome"] == "error"
        assert d.proc.poll() is None and d.readyz()[0] == 200  # the daemon itself never allocated it

        add_checkpoint(tiny_model_dir, registry, "good")
        good = wait_for(
            lambda: (r := by_model(d).get("good")) and r.status not in ("queued", "running") and r,
            180,
            interval=0.3,
            what="the next checkpoint's audit",
        )
        assert good.status == "done" and good.outcome == "block", good.error
        maps = open(f"/proc/{d.proc.pid}/maps").read()
        assert "libtorch" not in maps, "the daemon itself loaded torch"  # models live in audit children only
    finally:
        d.close()


@pytest.mark.slow
def test_hung_child_is_killed_at_the_deadline_and_sigterm_stops_the_daemon_during_a_hung_audit(
    tmp_path, tiny_model_dir
):
    registry = tmp_path / "registry"
    registry.mkdir()
    policy = tmp_path / "limits.yaml"
    policy.write_text(POLICY % HUNG_TIMEOUT_S)
    d = Daemon(tmp_path, registry, policy, AUDITD_CHILD_STOP_GRACE_S=str(GRACE_S)).start()
    try:
        endless_template(tiny_model_dir, tmp_path / "endless").rename(registry / "endless")
        wait_for(
            lambda: any("child process" in e["msg"] and "started" in e["msg"] for e in d.log()),
            60,
            interval=0.1,
            what="the audit child",
        )
        t_start = time.monotonic()
        a = wait_for(
            lambda: (r := by_model(d).get("endless")) and r.status not in ("queued", "running") and r,
            HUNG_TIMEOUT_S + GRACE_S + 30,
            interval=0.2,
            what="the hung audit to end",
        )
        ended_after = since(t_start)
        rendering = hanging_stage(d)
        print(
            f"\nhung template: {a.error!r} stored {ended_after} s after the child started "
            f"(deadline {HUNG_TIMEOUT_S} s, grace {GRACE_S} s); it had reached {rendering!r}"
        )
        m = re.match(rf"timeout after {HUNG_TIMEOUT_S} s in (.+?) \(", a.error)
        assert a.status == "error" and m, a.error
        # Named where it hung: the template renders inside generation (the last stage reported).
        assert m.group(1) == (rendering or m.group(1)) and m.group(1) not in ("idle", "start")
        assert ended_after <= HUNG_TIMEOUT_S + GRACE_S + 5
        wait_for(lambda: any("finished: error" in e["msg"] for e in d.log()), 20, what="the supervisor to finish")
        assert d.proc.poll() is None and d.readyz()[0] == 200

        # A second hung audit, and the daemon is told to stop while it hangs.
        endless_template(tiny_model_dir, tmp_path / "endless2")
        (tmp_path / "endless2" / "notes.txt").write_text("another checkpoint\n")
        (tmp_path / "endless2").rename(registry / "endless2")
        wait_for(
            lambda: (r := by_model(d).get("endless2")) and r.status == "running",
            60,
            interval=0.2,
            what="the second hung audit to start",
        )
        wait_for(lambda: hanging_stage(d, audit=2), HUNG_TIMEOUT_S, interval=0.1, what="the template to hang")
        time.sleep(1)  # inside the template's loop
        t_term = time.monotonic()
        rc = d.stop(timeout=GRACE_S + 30)
        stop_s = since(t_term)
        print(f"SIGTERM during a hung audit: exit code {rc} after {stop_s} s (child grace {GRACE_S} s)")
        assert rc == 0 and stop_s <= GRACE_S + 15
        left = by_model(d)["endless2"]
        assert left.status == "queued" and left.outcome is None  # resumable: the next start audits it again
    finally:
        d.close()
