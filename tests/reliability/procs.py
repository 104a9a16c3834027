"""Real daemons for the reliability suite: `auditd run` subprocesses on a temp home and registry,
their JSON logs, their audit children, and the database they write."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import select

from auditd.store.db import open_db, session
from auditd.store.models import AuditRun, CheckpointRow, Sample, Verdict
from tests.conftest import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_checkpoint(model_dir: Path, registry: Path, name: str) -> Path:
    """A copy of the tiny model with its own bytes (so its own digest), renamed into the registry."""
    staging = registry.parent / f".staging-{name}-{uuid.uuid4().hex[:6]}"
    shutil.copytree(model_dir, staging)
    (staging / "notes.txt").write_text(f"checkpoint {name}\n")
    target = registry / name
    staging.rename(target)
    return target


class Daemon:
    """One `auditd run` subprocess; restartable on the same home."""

    def __init__(self, root: Path, registry: Path, policy: Path, **env: str):
        self.root, self.registry = root, registry
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "daemon.log"
        self.env = dict(
            os.environ,
            AUDITD_HOME=str(root / "home"),
            AUDITD_REGISTRY_DIR=str(registry),
            AUDITD_POLICY=str(policy),
            AUDITD_METRICS_PORT=str(self.port),
            AUDITD_POLL_INTERVAL_S="0.5",
            AUDITD_REGISTRY_SETTLE_S="0",
            AUDITD_LOG_LEVEL="DEBUG",
            AUDITD_CHILD_STOP_GRACE_S="3",
            OMP_NUM_THREADS="1",
        )
        self.env.update(env)
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self._engine = None

    @property
    def db_url(self) -> str:
        return self.env.get("AUDITD_DB_URL") or f"sqlite:///{self.root / 'home' / 'auditd.db'}"

    @property
    def engine(self):
        if self._engine is None:
            self._engine = open_db(self.db_url)
        return self._engine

    def start(self, wait_ready: bool = True) -> Daemon:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditd.cli", "run"], env=self.env, stdout=log, stderr=log
            )
        if wait_ready:
            wait_for(
                lambda: self.proc.poll() is not None or self.readyz()[0] == 200,
                60,
                interval=0.1,
                what="the daemon to be ready",
            )
            assert self.proc.poll() is None, self.tail()
        return self

    def readyz(self) -> tuple[int, dict]:
        try:
            r = httpx.get(f"{self.url}/readyz", timeout=5)
            return r.status_code, r.json()
        except httpx.HTTPError:
            return 0, {}

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=10).text

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()
        if self._engine is not None:
            self._engine.dispose()

    # -- what it did ---------------------------------------------------------------------------
    def log(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def audits(self) -> list[AuditRun]:
        with session(self.engine) as s:
            return s.exec(select(AuditRun).order_by(AuditRun.id)).all()

    def finished(self, n: int) -> list[AuditRun] | None:
        rows = self.audits()
        return rows if len(rows) >= n and all(a.status not in ("queued", "running") for a in rows) else None

    def verdict(self, audit_id: int) -> Verdict | None:
        with session(self.engine) as s:
            return s.exec(select(Verdict).where(Verdict.audit_id == audit_id)).first()


def child_pids(daemon_pid: int) -> list[int]:
    """Audit children of a daemon (each leads its own process group)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == daemon_pid and b"auditd.runner.child" in cmdline:
            out.append(int(entry.name))
    return out


def integrity(engine) -> dict:
    """Per checkpoint: audits, verdicts; globally: duplicated samples, unfinished audits."""
    with session(engine) as s:
        checkpoints = s.exec(select(CheckpointRow.id)).all()
        verdicts = dict(s.exec(select(Verdict.checkpoint_id, func.count()).group_by(Verdict.checkpoint_id)).all())
        outcomes = s.exec(select(Verdict.outcome)).all()
        n = s.exec(select(func.count()).select_from(Sample)).one()
        distinct = s.exec(
            select(func.count()).select_from(
                select(Sample.audit_id, Sample.probe_id, Sample.item_index, Sample.variant).distinct().subquery()
            )
        ).one()
        unfinished = s.exec(
            select(func.count()).select_from(AuditRun).where(AuditRun.status.in_(("queued", "running")))
        ).one()
    return {
        "checkpoints": len(checkpoints),
        "verdicts_per_checkpoint": [verdicts.get(c, 0) for c in checkpoints],
        "duplicates": n - distinct,
        "false_passes": outcomes.count("pass"),
        "unfinished": unfinished,
        "outcomes": {o: outcomes.count(o) for o in set(outcomes)},
    }


def since(t0: float) -> float:
    return round(time.monotonic() - t0, 1)
