"""APScheduler wiring. Periodic jobs (registry poll, dispatch, heartbeat/recovery) run from an
in-memory job store: they are rebuilt at every start, and APScheduler 3.x's main loop does not
guard job-store writes (`update_job` in `_process_jobs`), so one "database is locked" in a
database-backed store killed the scheduler thread for good. Audits themselves are rows in
audit_runs (see queue.py), run on per-device worker pools, each in a supervised child process
(executor "process", auditd/runner/supervisor.py) or in this process (executor "inline").

Every job run is guarded (auditd/scheduler/health.py): failures are logged, counted per kind and
retried with backoff, and the loop's last completed cycle drives /readyz and the watchdog.
Several replicas may share one PostgreSQL database: all dispatch (claims are compare-and-set), only
the leader (auditd/scheduler/leader.py) polls registries, recovers orphans and flushes write-backs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC

from apscheduler.executors.pool import ThreadPoolExecutor as APSThreadPool
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import Engine

from auditd.policy.load import PolicyError
from auditd.registry.checkpoint import RegistrySource
from auditd.runner.audit import AuditContext, run_audit
from auditd.runner.verdicts import flush_write_backs, redecide_dependents
from auditd.scheduler import intake, queue
from auditd.scheduler.health import JobHealth
from auditd.scheduler.leader import Leadership
from auditd.settings import Settings
from auditd.store.db import session
from auditd.store.errors import storage_error_kind
from auditd.store.placement import HOST, place

log = logging.getLogger(__name__)

_LIVE: dict[str, AuditService] = {}


def _job_poll(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.run_job("registry-poll")


def _job_dispatch(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.run_job("dispatch")


def _job_maintain(key: str) -> None:
    if svc := _LIVE.get(key):
        svc.run_job("maintain")


class AuditService:
    def __init__(
        self, engine: Engine, settings: Settings, sources: list[RegistrySource], ctx: AuditContext, key: str = "main"
    ):
        self.engine, self.settings, self.sources, self.ctx, self.key = engine, settings, sources, ctx, key
        self.worker = queue.worker_id()
        self.slots = settings.device_slots_map
        self.pools = {
            d: ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"audit-{d}") for d, n in self.slots.items()
        }
        self.running_on: dict[str, set[int]] = {d: set() for d in self.slots}
        self._lock = threading.Lock()
        self.accepting = True
        self.last_tick = time.time()  # the last completed cycle: the watchdog is fed only while this moves
        self.last_poll: dict[str, float] = {}
        self.health = JobHealth()
        self.leader = Leadership(engine, settings.leader_lease_s, self.worker, on_elected=self._elected)
        self.scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={"default": APSThreadPool(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone="UTC",
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        _LIVE[self.key] = self
        # Recovery runs as the maintain job's first run: a database that is away at start-up is
        # retried with backoff like any other failure instead of stopping the daemon.
        add = self.scheduler.add_job
        add(
            _job_poll,
            "interval",
            args=[self.key],
            seconds=self.settings.poll_interval_s,
            id="registry-poll",
            replace_existing=True,
            next_run_time=_now(),
        )
        add(
            _job_dispatch,
            "interval",
            args=[self.key],
            seconds=2,
            id="dispatch",
            replace_existing=True,
            next_run_time=_now(),
        )
        add(
            _job_maintain,
            "interval",
            args=[self.key],
            seconds=30,
            id="maintain",
            replace_existing=True,
            next_run_time=_now(),
        )
        self.scheduler.start()
        self.leader.start()

    def stop(self, wait: bool = True) -> None:
        """Stop taking work; running audits stop at their next batch and stay queued."""
        self.accepting = False
        self.ctx.stop.set()
        self.leader.stop()
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # already stopped
            pass
        for pool in self.pools.values():
            pool.shutdown(wait=wait, cancel_futures=True)
        _LIVE.pop(self.key, None)

    # -- jobs (each guarded: a failure is logged, counted, retried with backoff) ----------------
    def run_job(self, job: str) -> None:
        jobs = {
            "registry-poll": self.poll_sources,
            "dispatch": self.dispatch,
            "maintain": self.maintain,
            "write-back": self.flush_write_backs,
        }
        if job == "registry-poll" and not self.leader.is_leader:
            return  # the leader polls; a follower's registry view would only race it
        ok = self.health.run(job, jobs[job])
        if job == "dispatch":  # every 2 s: also retry failing jobs whose backoff is over
            for failing in self.health.due_retries():
                if failing != "dispatch":
                    self.health.run(failing, jobs[failing])
            if ok and not self.health.failing:
                self.last_tick = time.time()  # a whole cycle: dispatch ran, and no job is failing now

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
                        intake.ingest(s, cp)
                    s.commit()
                intake.enqueue_polled(self.engine, self.settings.policy, policy, new)
                found += len(new)
                self.last_poll[src.id] = time.time()
            except Exception as exc:
                if storage_error_kind(exc):  # our database, not the source: the job's guard retries
                    raise
                log.exception("registry source %s failed to poll", src.id)
        if found:
            self.health.run("dispatch", self.dispatch)
        return found

    @property
    def running(self) -> set[int]:
        return set().union(*self.running_on.values())

    def dispatch(self) -> None:
        """Fill every device's free slots from the queue (highest priority first)."""
        gave_up: list[int] = []
        try:
            self._fill_slots(gave_up)
        finally:
            self._given_up(gave_up)

    def _fill_slots(self, gave_up: list[int]) -> None:
        for device, slots in self.slots.items():
            while self.accepting:
                with self._lock:
                    if len(self.running_on[device]) >= slots:
                        break
                    run = queue.claim_next(self.engine, device, self.worker, self.max_attempts, gave_up)
                    if run is None or run.id is None:
                        break
                    self.running_on[device].add(run.id)
                log.info(
                    "audit %s started on %s (checkpoint %s, attempt %s)",
                    run.id,
                    device,
                    run.checkpoint_id,
                    run.attempts,
                )
                self.pools[device].submit(self._run, run.id, device)

    def max_attempts(self, policy_name: str) -> int:
        """The policy's budget.max_attempts when the policy sets it, else the max_attempts setting."""
        try:
            budget = self.ctx.policies.get(policy_name).budget
        except Exception:  # the audit will end in error on its policy anyway
            return self.settings.max_attempts
        return budget.max_attempts if "max_attempts" in budget.model_fields_set else self.settings.max_attempts

    def _given_up(self, audit_ids: list[int]) -> None:
        if not audit_ids:
            return
        from auditd.store.models import AuditRun

        log.warning("audits %s given up after their maximum attempts: error verdicts", audit_ids)
        self.flush_write_backs()
        for audit_id in audit_ids:
            with session(self.engine) as s:
                redecide_dependents(self.ctx, s.get_one(AuditRun, audit_id).checkpoint_id)

    def _run(self, audit_id: int, device: str) -> None:
        try:
            if self.settings.executor == "ray":  # imports ray: only when chosen
                from auditd.runner.ray_executor import run_on_ray

                outcome = run_on_ray(self.ctx, audit_id, device)
            elif self.settings.executor == "process":
                from auditd.runner.supervisor import run_in_child

                place(self.engine, audit_id, HOST)
                outcome = run_in_child(self.ctx, audit_id, device)
            else:
                place(self.engine, audit_id, HOST)
                outcome = run_audit(self.ctx, audit_id)
            log.info("audit %s finished: %s", audit_id, outcome or "interrupted")
        except Exception:  # e.g. the database went away for good while stopping; recovery requeues it
            log.exception("audit %s: supervising it failed", audit_id)
        finally:
            with self._lock:
                self.running_on[device].discard(audit_id)
        self.health.run("write-back", self.flush_write_backs)
        if self.accepting:
            self.health.run("dispatch", self.dispatch)

    def flush_write_backs(self) -> int:
        # The leader only: two replicas flushing the same pending verdict would write it back twice.
        return flush_write_backs(self.ctx) if self.leader.is_leader else 0

    def _elected(self) -> None:
        """A new leader recovers the audits its predecessor left running and polls at once."""
        for job in ("maintain", "registry-poll"):
            try:
                self.scheduler.modify_job(job, next_run_time=_now())
            except Exception:  # not started yet or stopping: the regular runs follow
                pass

    def maintain(self) -> None:
        queue.heartbeat(self.engine, set(self.running))
        if not self.leader.is_leader:
            return
        with self._lock:  # not between a claim and its entry in running_on: that audit would look orphaned
            requeued = queue.recover(self.engine, self.settings.heartbeat_timeout_s, running_here=set(self.running))
        if requeued:
            log.info("requeued interrupted audits %s", requeued)
        self.flush_write_backs()  # verdicts stored but not yet written to the registry (a crash, a failure)


def _now():
    from datetime import datetime

    return datetime.now(UTC)
