"""Executor `ray`: each claimed audit runs as one Ray task on a cluster (docs/scaling.md).

The daemon stays the only scheduler: it claims the audit, submits one task, heartbeats the audit
while it waits, and enforces the policy's deadline. The task runs the ordinary runner in a Ray
worker process, which reads the checkpoint and writes samples, results and the verdict to the
shared store itself (PostgreSQL; SQLite only when every node is this host). Tasks, not a
long-lived actor: every audit is a different checkpoint, so there is no warm model to keep, and a
fresh worker (max_calls=1) hands all of a model's memory back when the audit ends.

A worker or node lost mid-audit is requeued by the daemon; the next attempt resumes from the
samples already stored (their key, audit x probe x item x variant, is unique), and max_attempts
bounds a checkpoint that kills every worker it lands on. Ray is imported only here, lazily.
"""

from __future__ import annotations

import logging
import threading
import time

from auditd.policy.model import Resources
from auditd.runner.audit import AuditContext, one_line, requeue, timeout_message
from auditd.runner.supervisor import SECRETS, audit_budget, audit_timeout_s, store_failure
from auditd.store.db import session
from auditd.store.models import AuditRun

log = logging.getLogger(__name__)

LOCAL_OBJECT_STORE_BYTES = 200_000_000
_connect_lock = threading.Lock()
_remote = None  # the task, made remote once per process


class RayConfigError(RuntimeError):
    pass


def connect(settings, engine) -> None:
    """Join (or start) the Ray cluster once per process; refuse a cluster the store cannot serve."""
    import ray

    with _connect_lock:
        if not ray.is_initialized():
            kwargs: dict = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
            if settings.ray_address:
                kwargs["address"] = settings.ray_address
            else:
                # Tasks pass a small job dict and get an outcome back: no need for Ray's default
                # object store of 30% of the machine's memory.
                kwargs.update(num_cpus=settings.ray_local_cpus, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
            ray.init(**kwargs)
            log.info("executor ray: connected to %s", settings.ray_address or "a local Ray instance")
        if engine.dialect.name == "sqlite":
            here = ray.util.get_node_ip_address()
            others = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")} - {here})
            if others:
                raise RayConfigError(
                    f"executor ray with SQLite needs every Ray node on this host (the database is a local file); "
                    f"nodes {', '.join(others)} are not: use PostgreSQL (AUDITD_DB_URL) for a multi-host cluster"
                )


def task_options(settings, device: str, wanted: Resources | None = None) -> dict:
    """The audit task's Ray options: the policy's `budget.resources` over the daemon's settings."""
    wanted = wanted or Resources()
    gpus = wanted.num_gpus if wanted.num_gpus is not None else settings.ray_num_gpus
    if gpus is None:
        gpus = 1 if device.startswith("cuda") else 0
    cpus = wanted.num_cpus if wanted.num_cpus is not None else settings.ray_num_cpus
    opts = {"num_cpus": cpus, "num_gpus": gpus, "max_retries": 0, "name": "auditd-audit"}
    if memory_mb := wanted.memory_mb if wanted.memory_mb is not None else settings.ray_memory_mb:
        opts["memory"] = memory_mb * 2**20
    if resources := {**settings.ray_resource_map, **wanted.custom}:
        opts["resources"] = resources
    return opts


def policy_resources(ctx: AuditContext, audit_id: int) -> Resources | None:
    """The audit's policy's `budget.resources`; None when the policy does not load (the audit then
    fails in the worker on the same policy, with the reason)."""
    try:
        return audit_budget(ctx, audit_id).resources
    except Exception as exc:  # noqa: BLE001
        log.warning("audit %s: no resources from its policy (%s); using the settings", audit_id, one_line(exc))
        return None


def audit_task(job: dict) -> str | None:
    """In the Ray worker: run the audit against the shared store, as an audit child would."""
    import ray

    from auditd.logs import setup_logging
    from auditd.registry.writeback import build_sources, make_write_back
    from auditd.runner.audit import run_audit
    from auditd.settings import Settings
    from auditd.store.db import make_engine
    from auditd.store.placement import place

    settings = Settings(**job["settings"])
    setup_logging(settings.log_level, json_lines=True)
    engine = make_engine(settings.database_url)
    try:
        node = ray.get_runtime_context().get_node_id()
        place(engine, job["audit_id"], f"ray:{ray.util.get_node_ip_address()}/{node[:8]}")
        ctx = AuditContext(engine, settings, on_verdict=make_write_back(build_sources(settings, engine)))
        return run_audit(ctx, int(job["audit_id"]))
    finally:
        engine.dispose()


def run_on_ray(ctx: AuditContext, audit_id: int, device: str, poll_s: float = 0.5) -> str | None:
    """Submit the audit, wait for it (deadline, daemon stop) and settle lost workers."""
    global _remote
    import ray
    from ray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError

    settings = ctx.settings
    connect(settings, ctx.engine)
    if _remote is None:
        _remote = ray.remote(max_calls=1)(audit_task)
    timeout_s = audit_timeout_s(ctx, audit_id)
    job = {"audit_id": audit_id, "settings": settings.model_dump(mode="json", exclude=set(SECRETS))}
    started = time.monotonic()
    ref = _remote.options(**task_options(settings, device, policy_resources(ctx, audit_id))).remote(job)
    log.info("audit %s: submitted to Ray", audit_id)
    while True:
        done, _ = ray.wait([ref], timeout=poll_s)
        if done:
            break
        if time.monotonic() - started >= timeout_s:
            message = timeout_message(timeout_s, "ray task")
            log.warning("audit %s: %s; cancelling its task", audit_id, message)
            store_failure(ctx, audit_id, message, time.monotonic() - started)
            ray.cancel(ref, force=True)
            return "error"
        if ctx.stop.is_set():
            ray.cancel(ref, force=True)
            requeue(ctx.engine, audit_id)
            log.info("audit %s: daemon stopping; its task was cancelled and it stays queued", audit_id)
            return None
    try:
        outcome = ray.get(ref, timeout=60)
    except RayTaskError as exc:  # the task raised outside the runner's own handling: fail closed
        message = f"ray task failed: {one_line(exc.cause if getattr(exc, 'cause', None) else exc)}"[:500]
        log.error("audit %s: %s", audit_id, message)
        store_failure(ctx, audit_id, message, time.monotonic() - started)
        return "error"
    except (TaskCancelledError, GetTimeoutError, ray.exceptions.RayError) as exc:
        # Worker process or node lost: requeue; the next attempt resumes from the stored samples.
        if requeue(ctx.engine, audit_id):
            log.warning("audit %s: Ray worker lost (%s); requeued", audit_id, type(exc).__name__)
            return None
        return _outcome(ctx, audit_id)
    if outcome is None and _still_running(ctx, audit_id):  # returned, yet left no verdict: fail closed
        store_failure(ctx, audit_id, "ray task ended without a verdict", time.monotonic() - started)
        return "error"
    return outcome


def _still_running(ctx: AuditContext, audit_id: int) -> bool:
    with session(ctx.engine) as s:
        audit = s.get(AuditRun, audit_id)
    return audit is not None and audit.status == "running"


def _outcome(ctx: AuditContext, audit_id: int) -> str | None:
    with session(ctx.engine) as s:
        audit = s.get(AuditRun, audit_id)
    return audit.outcome if audit is not None and audit.status not in ("queued", "running") else None


def cluster_gpus() -> tuple[float, float] | None:
    """(free, total) GPUs of the cluster this process joined; None when it joined none (ray not imported)."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.available_resources().get("GPU", 0.0), ray.cluster_resources().get("GPU", 0.0)
