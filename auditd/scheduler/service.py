"""APScheduler wiring. Periodic jobs (registry poll, dispatch, heartbeat/recovery) live in an
APScheduler job store in auditd's own database, so their schedule survives restarts; audits
themselves are rows in audit_runs (see queue.py) run on per-device worker pools.

APScheduler 3.x persists jobs by textual reference, so job functions are module-level and find
their live service through `_LIVE` by key. Only one scheduler may use a job store at a time
(APScheduler FAQ); several replicas need a leader lock (see docs/operations.md).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from auditd.policy.load import PolicyError
from auditd.policy.versions import request_key, version_of
from auditd.runner.audit import AuditContext, run_audit
from auditd.scheduler import queue
from auditd.settings import Settings
from auditd.store.db import session

log = logging.getLogger(__name__)

_LIVE: dict[str, "AuditService"] = {}


def _job_poll(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.poll_sources()


def _job_dispatch(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.dispatch()


def _job_maintain(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.maintain()


class AuditService:
    def __init__(self, engine: Engine, settings: Settings, sources: list, ctx: AuditContext, key: str = "main"):
        self.engine, self.settings, self.sources, self.ctx, self.key = engine, settings, sources, ctx, key
        self.worker = queue.worker_id()
        self.slots = settings.device_slots_map
        self.pools = {d: ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"audit-{d}") for d, n in self.slots.items()}
        self.running_on: dict[str, set[int]] = {d: set() for d in self.slots}
        self._lock = threading.Lock()
        self.accepting = True
        self.last_tick = time.time()  # the watchdog is fed only while this moves
        self.last_poll: dict[str, float] = {}
        self.scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename="apscheduler_jobs")},
            executors={"default": APSThreadPool(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone="UTC",
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        _LIVE[self.key] = self
        requeued = queue.recover(self.engine, self.settings.heartbeat_timeout_s)
        if requeued:
            log.info("requeued interrupted audits %s", requeued)
        add = self.scheduler.add_job
        add(_job_poll, "interval", args=[self.key], seconds=self.settings.poll_interval_s, id="registry-poll",
            replace_existing=True, next_run_time=_now())
        add(_job_dispatch, "interval", args=[self.key], seconds=2, id="dispatch", replace_existing=True,
            next_run_time=_now())
        add(_job_maintain, "interval", args=[self.key], seconds=30, id="maintain", replace_existing=True)
        self.scheduler.start()

    def stop(self, wait: bool = True) -> None:
        """Stop taking work; running audits stop at their next batch and stay queued."""
        self.accepting = False
        self.ctx.stop.set()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # already stopped
            pass
        for pool in self.pools.values():
            pool.shutdown(wait=wait, cancel_futures=True)
        _LIVE.pop(self.key, None)

    # -- jobs -------------------------------------------------------------------------------
    def poll_sources(self) -> int:
        found = 0
        try:
            policy = self.ctx.policies.get(self.settings.policy)
        except PolicyError as exc:  # one clear line per poll, not a scheduler traceback; nothing is ingested
            log.error("registry poll skipped, the policy does not load: %s", exc)
            return 0
        for src in self.sources:
            try:
                with session(self.engine) as s:
                    new = src.poll(s)
                    for cp in new:
                        queue.ingest(s, cp)
                    s.commit()
                for cp in new:
                    if policy.plan(cp.kind):
                        # Keyed by plan version: a second poll cannot queue it twice, a changed plan can.
                        queue.enqueue(self.engine, cp.id, policy=self.settings.policy,
                                      request_key=request_key(self.settings.policy, version_of(policy)))
                    else:
                        log.info("checkpoint %s (%s) recorded; policy %r has no %s probes", cp.id, cp.model,
                                 policy.name, cp.kind)
                    log.info("new checkpoint %s model=%s kind=%s path=%s", cp.id, cp.model, cp.kind, cp.path)
                found += len(new)
                self.last_poll[src.id] = time.time()
            except Exception:
                log.exception("registry source %s failed to poll", src.id)
        if found:
            self.dispatch()
        return found

    @property
    def running(self) -> set[int]:
        return set().union(*self.running_on.values())

    def dispatch(self) -> None:
        """Fill every device's free slots from the queue (highest priority first)."""
        self.last_tick = time.time()
        for device, slots in self.slots.items():
            while self.accepting:
                with self._lock:
                    if len(self.running_on[device]) >= slots:
                        break
                    run = queue.claim_next(self.engine, device, self.worker, self.settings.max_attempts)
                    if run is None:
                        break
                    self.running_on[device].add(run.id)
                log.info("audit %s started on %s (checkpoint %s, attempt %s)", run.id, device, run.checkpoint_id,
                         run.attempts)
                self.pools[device].submit(self._run, run.id, device)

    def _run(self, audit_id: int, device: str) -> None:
        try:
            outcome = run_audit(self.ctx, audit_id)
            log.info("audit %s finished: %s", audit_id, outcome or "interrupted")
        finally:
            with self._lock:
                self.running_on[device].discard(audit_id)
        if self.accepting:
            self.dispatch()

    def maintain(self) -> None:
        self.last_tick = time.time()
        queue.heartbeat(self.engine, set(self.running))
        queue.recover(self.engine, self.settings.heartbeat_timeout_s, running_here=set(self.running))


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
