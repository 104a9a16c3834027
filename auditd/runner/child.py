"""One audit in a fresh interpreter: `python -m auditd.runner.child`, started by the daemon's
supervisor (auditd/runner/supervisor.py) in its own process group.

Resource limits are set first, before anything that could import a model library; the child dies
with the daemon (PR_SET_PDEATHSIG), so a restarted daemon never races an orphan on the same audit.
It reads its job (audit id, settings, limits) as JSON on stdin and reports every stage change as a
line "stage NAME" on the file descriptor named by AUDITD_STAGE_FD. SIGTERM asks it to stop at the
next batch and leave the audit queued (the daemon is stopping); the supervisor kills it otherwise.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

EXIT_MEMORY = 3  # a MemoryError outside the runner (which stores its own)
STAGE_FD_ENV = "AUDITD_STAGE_FD"


def apply_limits(memory: int | None, cpu_s: int | None, max_files: int | None) -> None:
    for res, value, extra in (
        (resource.RLIMIT_AS, memory, 0),
        (resource.RLIMIT_NOFILE, max_files, 0),
        (resource.RLIMIT_CPU, cpu_s, 5),
    ):  # CPU: SIGXCPU at soft, SIGKILL 5 s later
        if value:
            hard = resource.getrlimit(res)[1]
            if hard != resource.RLIM_INFINITY:
                value, extra = min(value, hard), min(extra, max(0, hard - value))
            resource.setrlimit(res, (value, value + extra))


def die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's deadline still bounds us
        pass
    if os.getppid() != parent_pid:  # the daemon died before the line above took effect
        os._exit(1)


def main() -> int:
    job = json.loads(sys.stdin.read())
    apply_limits(job.get("memory_limit"), job.get("cpu_limit"), job.get("max_files"))
    die_with_parent(job["parent_pid"])
    report = _reporter()
    try:
        return _run(job, report)
    except MemoryError:
        report("memory")
        return EXIT_MEMORY


def _reporter():
    fd = os.environ.get(STAGE_FD_ENV)
    if not fd:
        return lambda line: None
    pipe = os.fdopen(int(fd), "w", buffering=1)

    def report(line: str) -> None:
        pipe.write(line.replace("\n", " ") + "\n")

    return report


def _run(job: dict, report) -> int:
    from auditd import stage
    from auditd.logs import setup_logging
    from auditd.runner.audit import AuditContext, run_audit
    from auditd.settings import Settings
    from auditd.store.db import make_engine

    settings = Settings(**job["settings"])
    setup_logging(settings.log_level, json_lines=True)
    stage.add_listener(lambda name: report(f"stage {name}"))
    engine = make_engine(settings.database_url)
    # The child writes its verdict back itself, right after storing it; one it could not write
    # (killed in between) stays marked pending and the daemon writes it.
    from auditd.registry.writeback import build_sources, make_write_back

    ctx = AuditContext(
        engine,
        settings,
        on_verdict=make_write_back(build_sources(settings, engine)),
        memory_limit=job.get("memory_limit"),
    )
    signal.signal(signal.SIGTERM, lambda *_: ctx.stop.set())
    outcome = run_audit(ctx, int(job["audit_id"]))
    report(f"outcome {outcome or 'interrupted'}")
    ctx.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
