"""The process executor: each audit runs in a child interpreter (auditd/runner/child.py) that the
daemon supervises. The daemon itself never loads a model, so a checkpoint that exhausts memory,
hangs in a C loop or crashes the interpreter takes down one audit, never the daemon.

The supervisor enforces the policy's budget.audit_timeout_s as a hard wall-clock deadline
(the error verdict is stored first, then SIGTERM to the child's process group, SIGKILL after
`child_stop_grace_s`), and turns any death of the child into a stored error verdict with a one-line
reason naming the stage it was in. A daemon stop asks the child to leave its audit queued.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import time

from auditd.logs import one_line
from auditd.policy.model import Budget
from auditd.runner.audit import (
    AuditContext,
    fail_audit,
    memory_message,
    requeue,
    timeout_message,
)
from auditd.runner.child import EXIT_MEMORY, STAGE_FD_ENV
from auditd.runner.content import discard_snapshot
from auditd.runner.verdicts import redecide_dependents, write_back
from auditd.store.db import session
from auditd.store.errors import retry_storage
from auditd.store.models import AuditRun, CheckpointRow

log = logging.getLogger(__name__)

SECRETS = ("api_token", "webhook_secret", "hf_webhook_secret", "mlflow_webhook_secret")  # the child needs none
SECRET_ENV = {f"AUDITD_{name.upper()}" for name in SECRETS}
DEFAULT_TIMEOUT_S = 3600.0  # when the policy does not load (the child then fails with the reason)


class ChildAudit:
    """Runs one claimed audit in a child process to its end; run() returns the outcome, or None
    when the audit was left queued (the daemon is stopping)."""

    def __init__(self, ctx: AuditContext, audit_id: int, device: str, poll_s: float = 0.25):
        self.ctx, self.audit_id, self.device, self.poll_s = ctx, audit_id, device, poll_s
        self.stage = "start"
        self.peak_vm = 0  # bytes, VmPeak of the child as last seen
        self.proc: subprocess.Popen | None = None

    @property
    def _child(self) -> subprocess.Popen:
        assert self.proc is not None, "the child is spawned first"
        return self.proc

    # -- the child's life -----------------------------------------------------------------------
    def run(self) -> str | None:
        settings = self.ctx.settings
        timeout_s = self._timeout_s()
        self.memory_limit = settings.child_memory_bytes(self.device)
        job = {
            "audit_id": self.audit_id,
            "parent_pid": os.getpid(),
            "settings": settings.model_dump(mode="json", exclude=set(SECRETS)),
            "memory_limit": self.memory_limit,
            "cpu_limit": settings.child_cpu_seconds(timeout_s),
            "max_files": settings.child_max_files,
        }
        started = time.monotonic()
        self._spawn(job)
        ended_by = self._watch(started + timeout_s, timeout_s)
        # A killed child cannot clean up after itself; a resumed audit takes a fresh snapshot anyway.
        discard_snapshot(settings, self.audit_id)
        return self._conclude(ended_by, started)

    def _spawn(self, job: dict) -> None:
        read_fd, write_fd = os.pipe()
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        env[STAGE_FD_ENV] = str(write_fd)
        if job["memory_limit"]:
            env.setdefault("MALLOC_ARENA_MAX", "2")  # glibc's per-thread arenas reserve address space, not memory
        try:
            proc = self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditd.runner.child"],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        self.reader = os.fdopen(read_fd, "rb", buffering=0)
        try:
            assert proc.stdin is not None  # stdin=PIPE
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except BrokenPipeError:  # it died at once; its exit status says why
            pass
        log.info("audit %s: child process %s started", self.audit_id, self._child.pid)

    def _watch(self, deadline: float, timeout_s: float) -> str | None:
        """Follow the child until it exits. Returns None (it exited), "timeout" or "stop"."""
        ended_by, kill_at, buf = None, None, b""
        while True:
            now = time.monotonic()
            if ended_by is None and now >= deadline:
                ended_by, kill_at = "timeout", now + self.ctx.settings.child_stop_grace_s
                self._store_timeout(timeout_s)
                self._signal(signal.SIGTERM)
            elif ended_by is None and self.ctx.stop.is_set():
                ended_by, kill_at = "stop", now + self.ctx.settings.child_stop_grace_s
                self._signal(signal.SIGTERM)  # the child leaves its audit queued at the next batch
            if kill_at is not None and now >= kill_at:
                self._signal(signal.SIGKILL)
                kill_at = float("inf")
            wait = max(0.0, min(self.poll_s, deadline - now if ended_by is None else self.poll_s))
            readable, _, _ = select.select([self.reader], [], [], wait)
            if readable:
                chunk = self.reader.read(4096)
                if chunk:
                    buf = self._lines(buf + chunk)
                    continue
                # EOF: the child closed its end (exited); reap it, then a last look at the group.
                self._child.wait()
                self._signal(signal.SIGKILL)  # anything it left behind in its group goes too
                self.reader.close()
                return ended_by
            self._sample_memory()
            if self._child.poll() is not None and not readable:
                # Exited while a grandchild still holds the pipe open: do not wait on it.
                self._signal(signal.SIGKILL)
                self.reader.close()
                return ended_by

    def _lines(self, buf: bytes) -> bytes:
        *lines, rest = buf.split(b"\n")
        for raw in lines:
            kind, _, value = raw.decode(errors="replace").partition(" ")
            if kind == "stage":
                self.stage = value or "idle"
                log.debug("audit %s: stage %s", self.audit_id, self.stage)
        return rest

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self._child.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def _sample_memory(self) -> None:
        try:
            with open(f"/proc/{self._child.pid}/status") as f:
                for line in f:
                    if line.startswith("VmPeak:"):
                        self.peak_vm = max(self.peak_vm, int(line.split()[1]) * 1024)
                        break
        except (OSError, ValueError, IndexError):
            pass

    # -- endings ----------------------------------------------------------------------------------
    def _timeout_s(self) -> float:
        return audit_timeout_s(self.ctx, self.audit_id)

    def _store_timeout(self, timeout_s: float) -> None:
        message = timeout_message(timeout_s, self.stage)
        log.warning("audit %s: %s; stopping its process", self.audit_id, message)
        self._fail(message, timeout_s)

    def _death_reason(self) -> str:
        rc, where = self._child.returncode, self.stage
        if rc == 0:
            return f"exited without a verdict in {where}"
        if rc == EXIT_MEMORY:
            return memory_message(self.memory_limit, where)
        if rc > 0:
            return f"exited with code {rc} in {where}"
        sig = -rc
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGXCPU:
            return f"killed: CPU time limit exceeded in {where}"
        near_limit = self.memory_limit and self.peak_vm >= 0.9 * self.memory_limit
        if near_limit and sig in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGKILL):
            return memory_message(self.memory_limit, where) + f" ({name})"
        if sig == signal.SIGKILL:
            return f"killed by SIGKILL in {where} (the kernel's out-of-memory killer, or an operator)"
        return f"killed by {name} in {where}"

    def _conclude(self, ended_by: str | None, started: float) -> str | None:
        audit = self._storing(lambda: _audit(self.ctx.engine, self.audit_id), "read its state")
        if audit.status == "running":
            if ended_by == "stop":
                self._storing(lambda: requeue(self.ctx.engine, self.audit_id), "requeue")
                log.info("audit %s stopped with the daemon; it will resume on the next start", self.audit_id)
                return None
            reason = self._death_reason()
            log.warning("audit %s: child process %s", self.audit_id, reason)
            self._fail(reason, time.monotonic() - started)
            audit = self._storing(lambda: _audit(self.ctx.engine, self.audit_id), "read its state")
        if audit.status == "queued":
            return None
        return audit.outcome

    def _fail(self, message: str, elapsed_s: float) -> None:
        store_failure(self.ctx, self.audit_id, message, elapsed_s, self._storing)

    def _storing(self, fn, what: str):
        # No deadline: an ending must be stored. Only a daemon stop gives up (the audit then stays
        # `running` under a dead pid, and the next start requeues it).
        return retry_storage(fn, f"audit {self.audit_id}: {what}", should_stop=self.ctx.stop.is_set, max_delay=5.0)


def audit_budget(ctx: AuditContext, audit_id: int) -> Budget:
    """The `budget` of the audit's policy (raises when the policy does not load)."""
    with session(ctx.engine) as s:
        policy_name = s.get_one(AuditRun, audit_id).policy
    return ctx.policies.get(policy_name).budget


def audit_timeout_s(ctx: AuditContext, audit_id: int) -> float:
    """The audit's hard deadline: its policy's budget.audit_timeout_s."""
    try:
        return float(audit_budget(ctx, audit_id).audit_timeout_s)
    except Exception as exc:  # the audit will fail on the same policy, with the reason
        log.warning(
            "audit %s: no deadline from its policy (%s); using %.0f s", audit_id, one_line(exc), DEFAULT_TIMEOUT_S
        )
        return DEFAULT_TIMEOUT_S


def store_failure(ctx: AuditContext, audit_id: int, message: str, elapsed_s: float, storing=None) -> None:
    """An executor ends an audit it supervises in error: store the verdict, write it back,
    re-decide the checkpoints compared against this one."""

    def store():
        return fail_audit(ctx.engine, audit_id, "error", message, elapsed_s)

    verdict = storing(store, "store the error") if storing else store()
    if verdict is not None:
        with session(ctx.engine) as s:
            checkpoint = s.get_one(CheckpointRow, verdict.checkpoint_id)
        write_back(ctx, checkpoint, verdict)
        redecide_dependents(ctx, checkpoint.id)


def _audit(engine, audit_id: int) -> AuditRun:
    with session(engine) as s:
        return s.get_one(AuditRun, audit_id)


def run_in_child(ctx: AuditContext, audit_id: int, device: str) -> str | None:
    return ChildAudit(ctx, audit_id, device).run()
