"""A private local Ray cluster for tests: `ray start --head --block` on loopback with 2 CPUs, a small
object store and its own temp dir, stopped by process id (never `ray stop`, which would stop every
Ray instance on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.reliability.procs import free_port

AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}


def processes_under(marker: str) -> list[int]:
    """Pids whose command line names `marker` (our temp dir): this cluster's processes only."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def session_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return None


def worker_pids(task_name: str) -> list[int]:
    """Ray worker processes running a task of this name (Ray retitles them `ray::<name>`)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(f"ray::{task_name}".encode()):
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


class RayCluster:
    def __init__(self, num_cpus: int = 2):
        # Short: Ray's unix sockets live under it (108-byte path limit).
        self.root = Path(tempfile.mkdtemp(prefix="adr-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        ray = Path(sys.executable).parent / "ray"
        self.cmd = [
            str(ray),
            "start",
            "--head",
            "--block",
            "--port",
            str(self.port),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(num_cpus),
            "--num-gpus",
            "0",
            "--include-dashboard=false",
            "--object-store-memory",
            "100000000",
            "--temp-dir",
            str(self.root),
            "--disable-usage-stats",
        ]
        self.proc: subprocess.Popen | None = None
        self.sessions: list[int] = []  # every process this cluster starts stays in one of these sessions

    def start(self, timeout: float = 90) -> RayCluster:
        # A loopback-only cluster: no token auth, which would otherwise depend on a token file in ~/.ray
        # that any earlier local ray.init on the machine may have left (the driver must agree: see AUTH_ENV).
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", **AUTH_ENV)
        self.log = open(self.root / "start.log", "wb")
        self.proc = subprocess.Popen(
            self.cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.sessions.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited: {(self.root / 'start.log').read_text()[-2000:]}")
            if b"Ray runtime started" in (self.root / "start.log").read_bytes():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("ray start did not come up in time")

    def add_node(self, ip: str, num_cpus: int = 1) -> None:
        """A second node on this host that reports another address (any 127.x.y.z is this host)."""
        ray = Path(sys.executable).parent / "ray"
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", **AUTH_ENV)
        proc = subprocess.Popen(
            [
                str(ray),
                "start",
                "--address",
                self.address,
                "--node-ip-address",
                ip,
                "--num-cpus",
                str(num_cpus),
                "--object-store-memory",
                "80000000",
                "--disable-usage-stats",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.sessions.append(proc.pid)
        if proc.wait(timeout=90) != 0:
            raise RuntimeError(f"ray start of a node at {ip} failed")

    def workers(self, task_name: str) -> list[int]:
        """This cluster's workers (in its session) running a task of this name."""
        out = []
        for pid in worker_pids(task_name):
            try:
                if os.getsid(pid) in self.sessions:
                    out.append(pid)
            except ProcessLookupError:
                pass
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # --block tears its processes down on SIGTERM
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        leftovers = processes_under(str(self.root))  # whatever outlived it (raylet, gcs, agents, workers)
        leftovers += [
            int(e.name)
            for e in Path("/proc").iterdir()
            if e.name.isdigit() and session_of(int(e.name)) in self.sessions
        ]
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for group in self.sessions:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
