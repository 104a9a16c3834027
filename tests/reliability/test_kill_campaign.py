"""kill -9 campaign: the daemon and its audit children are killed at >= 20 moments aimed at every
stage of a checkpoint's path (ingest, claim, load, generate, judge, verdict, write-back), using the
stage reports the children send (logged by the daemon). After the last restart every checkpoint
ends with exactly one verdict (in the database and written back), no sample is stored twice, and
nothing passes: the backend always complies, so the only honest outcomes are block and error."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.reliability.procs import Daemon, add_checkpoint, child_pids, integrity, since

POLICY = """
name: campaign
probes:
  text:
    - id: policy
      limit_per_category: 2
    - id: overrefusal
      limit_per_category: 4
backend: {id: "backend:fake", options: {mode: comply}}
generation: {max_new_tokens: 8, batch_size: 2}
budget: {audit_timeout_s: 120}
"""
TARGETS = ("ingest", "claim", "load", "generate", "judge", "verdict", "write-back")
MIN_POINTS = 21


class LogFollower:
    """New JSON log lines of the daemon (and its children) since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new(self) -> list[str]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in data[:end].decode(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line)["msg"])
                except (ValueError, KeyError):
                    pass
        return out


def wait_for_moment(follower: LogFollower, target: str, timeout: float) -> str | None:
    """Block until the log shows `target` begin; returns the log line, or None on timeout."""
    needle = {"claim": " started on "}.get(target, f": stage {target}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in follower.new():
            if needle in msg:
                return msg
        time.sleep(0.005)
    return None


@pytest.mark.slow
def test_kill_9_campaign_every_checkpoint_ends_with_exactly_one_verdict(tmp_path, tiny_model_dir):
    rng = random.Random(int(os.environ.get("AUDITD_CAMPAIGN_SEED", "20261130")))
    registry = tmp_path / "registry"
    registry.mkdir()
    policy = tmp_path / "campaign.yaml"
    policy.write_text(POLICY)
    d = Daemon(tmp_path, registry, policy)
    names = iter(f"m{i:02d}" for i in range(1000))
    dropped = [add_checkpoint(tiny_model_dir, registry, next(names)) for _ in range(3)]
    follower = LogFollower(d.log_path)
    points: list[tuple[str, str, str]] = []  # (aimed stage, victim, what the log showed)
    t0 = time.monotonic()
    d.start()
    try:
        i = 0
        while len(points) < MIN_POINTS:
            target = TARGETS[i % len(TARGETS)]
            # Daemon restarts cost the most (a fresh interpreter, migrations check): a third of the rest.
            victim = "daemon" if target == "ingest" or rng.random() < 0.3 else "child"
            i += 1
            if target != "ingest" and not [a for a in d.audits() if a.status in ("queued", "running")]:
                dropped.append(add_checkpoint(tiny_model_dir, registry, next(names)))  # keep work in flight
            if target == "ingest":
                follower.new()
                dropped.append(add_checkpoint(tiny_model_dir, registry, next(names)))
                time.sleep(rng.uniform(0.0, 1.0))  # polls every 0.5 s: lands before, during or after ingest
                seen = "new checkpoint" if any("new checkpoint" in m for m in follower.new()) else "before ingest"
            else:
                seen = wait_for_moment(follower, target, timeout=30)
                if seen is None:  # nothing left to audit: give it more work and aim again
                    dropped.append(add_checkpoint(tiny_model_dir, registry, next(names)))
                    continue
                seen = seen.split(": ", 1)[-1][:40]
            if victim == "child":
                pids = child_pids(d.proc.pid)
                if not pids:
                    continue  # the child already ended: the moment passed
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            else:
                d.kill()
                d.start()
            points.append((target, victim, seen))
        # Let everything finish, then check.
        wait_for(lambda: d.finished(len(dropped)), 240, interval=0.5, what="all audits to end")
        result = integrity(d.engine)
        body = d.metrics()
    finally:
        d.close()

    written = {
        p.name: json.loads((p / "auditd-verdict.json").read_text())["outcome"]
        for p in dropped
        if (p / "auditd-verdict.json").exists()
    }
    victims = Counter(v for _, v, _ in points)
    print(
        f"\nkill -9 campaign: {len(points)} points ({victims['daemon']} daemon, {victims['child']} child) "
        f"aimed at {dict(Counter(t for t, _, _ in points))}; {result['checkpoints']} checkpoints, "
        f"{sum(result['verdicts_per_checkpoint'])} verdicts {result['outcomes']}, {result['duplicates']} duplicated "
        f"samples, {result['false_passes']} false passes, {len(written)} verdict files; {since(t0)} s"
    )
    assert len(points) >= 20
    assert result["checkpoints"] == len(dropped)
    assert result["verdicts_per_checkpoint"] == [1] * len(dropped), result
    assert result["duplicates"] == 0 and result["false_passes"] == 0 and result["unfinished"] == 0
    assert len(written) == len(dropped) and "pass" not in written.values()
    assert f'auditd_audits_total{{outcome="error"}} {float(result["outcomes"].get("error", 0))}' in body
