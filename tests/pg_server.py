"""A private PostgreSQL server (Debian's binaries) on a unix socket in a temp folder, for tests
that need a real one: started, stopped and started again at will."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(cmd):
    # initdb refuses to run as root; CI runs as root, developers usually not.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PgServer:
    def __init__(self, port_offset: int = 0):
        self.bindir = BIN[-1]
        # Not under pytest's tmp dir: that is private to our user and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="auditd-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.sock, "postgres")
        subprocess.run(
            _as_postgres([f"{self.bindir}/initdb", "-D", str(self.data), "-A", "trust", "-U", "auditd"]),
            check=True,
            capture_output=True,
        )
        self.port = 5400 + (os.getpid() + port_offset) % 500
        self.url = f"postgresql+psycopg://auditd@/postgres?host={self.sock}&port={self.port}"

    def start(self) -> PgServer:
        opts = f"-c listen_addresses='' -k {self.sock} -p {self.port} -c fsync=off"
        subprocess.run(
            _as_postgres(
                [f"{self.bindir}/pg_ctl", "-D", str(self.data), "-o", opts, "-w", "start", "-l", str(self.root / "log")]
            ),
            check=True,
            capture_output=True,
        )
        return self

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(
            _as_postgres([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"]), capture_output=True
        )

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
