"""The long-running daemon: registry sources -> scheduler -> audits, plus /metrics and systemd.

Lifecycle: SIGTERM/SIGINT stop taking work, interrupt running audits at their next batch (they
stay queued and resume on the next start) and exit; SIGHUP re-reads and re-checks the policy;
under systemd, READY=1 is sent once serving and WATCHDOG=1 only while the scheduler loop ticks.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from auditd.api.app import create_app
from auditd.api.server import HTTPServer
from auditd.metrics.collector import build_registry
from auditd.notify import sd_notify, watchdog_interval_s
from auditd.registry.writeback import build_sources, make_write_back, verdict_document  # noqa: F401  (re-exported)
from auditd.runner.audit import AuditContext
from auditd.runner.content import remove_stale_snapshots
from auditd.scheduler.intake import resume_deliveries
from auditd.scheduler.reaudit import after_reload, watch_policies
from auditd.scheduler.service import AuditService
from auditd.settings import Settings, redact_url
from auditd.store.db import open_db

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = open_db(settings.database_url)
        self.sources = build_sources(settings, self.engine)
        self.ctx = AuditContext(self.engine, settings, on_verdict=make_write_back(self.sources))
        self.ctx.policies.get(settings.policy)  # a bad policy stops start-up, clearly
        remove_stale_snapshots(settings.snapshot_path)  # left by a crash; resumed audits take fresh ones
        if settings.executor == "ray":  # a cluster the store cannot serve stops start-up, clearly
            from auditd.runner.ray_executor import connect

            connect(settings, self.engine)
        self.service = AuditService(self.engine, settings, self.sources, self.ctx)
        self.registry = build_registry(self.engine, self.state)
        app = create_app(self.engine, self.registry, self.ready, settings=settings, poll=self.service.poll_sources)
        self.http = HTTPServer(app, settings.metrics_host, settings.metrics_port)
        self.stopping = threading.Event()
        self.stopping_requested = threading.Event()

    def state(self) -> dict:
        return {
            "tick": self.service.last_tick,
            "polls": dict(self.service.last_poll),
            "errors": self.service.health.error_counts(),
            "replica": self.service.worker,
            "leader": self.service.leader.is_leader,
        }

    def ready(self) -> list[str]:
        """Why the daemon is not ready (empty when it is): /readyz answers 503 with these."""
        reasons = []
        if self.stopping.is_set() or self.stopping_requested.is_set():
            reasons.append("stopping")
        if not self.service.scheduler.running:
            reasons.append("scheduler not running")
        elif not self.scheduler_alive():
            reasons.append(f"scheduler has not completed a cycle for {time.time() - self.service.last_tick:.0f} s")
        return reasons + self.service.health.reasons()

    def start(self) -> None:
        self.http.start()
        self.service.start()
        resume_deliveries(self.engine, self.settings)  # webhooks accepted before a crash, not yet handed over
        watch_policies(self)  # verdicts decided under an older version of their policy follow it
        log.info(
            "auditd serving %s/metrics; registry=%s db=%s",
            self.http.url,
            self.settings.registry_dir,
            redact_url(self.settings.database_url),
        )
        sd_notify("READY=1\nSTATUS=auditing")

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        sd_notify("STOPPING=1")
        log.info("stopping: no new audits; running audits stop at their next batch and resume on restart")
        self.service.stop(wait=True)
        self.http.stop()
        self.engine.dispose()

    def reload(self) -> None:
        """SIGHUP: re-read the policies in use. A file that no longer loads is reported in one line
        and its last good version stays in force: a typo must not change what is enforced."""
        results = self.ctx.policies.reload()
        for name, error in results.items():
            if error:
                log.error("policy reload failed, keeping the policy in force: %s", error)
            else:
                log.info("policy %r reloaded", name)
        after_reload(self, results)  # re-decide or re-audit what a changed policy governs

    def run_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())
        self.start()
        self.watch()
        self.stop()

    @property
    def stale_after_s(self) -> float:
        """How long the scheduler loop may go without a tick before the watchdog starves."""
        return self.settings.watchdog_stale_s or max(60.0, 3 * self.settings.poll_interval_s)

    def scheduler_alive(self) -> bool:
        # A cycle completes every 2 s (the dispatch job, with no job failing); a paused, dead or wedged
        # scheduler, or a database that stays locked, full or unreachable, stops it.
        return time.time() - self.service.last_tick < self.stale_after_s

    def watch(self) -> None:
        """Until a stop is requested: feed systemd's watchdog, but only while the scheduler loop
        ticks, so that a stuck loop gets the service killed and restarted (WatchdogSec)."""
        interval = watchdog_interval_s()
        stalled = False
        while not self.stopping_requested.wait(timeout=interval or 1.0):
            if not interval:
                continue
            if self.scheduler_alive():
                sd_notify("WATCHDOG=1")
                if stalled:
                    log.info("scheduler loop ticks again; watchdog fed again")
                stalled = False
            elif not stalled:
                stalled = True
                log.error(
                    "scheduler loop has not completed a cycle for %.0f s; no longer feeding the watchdog, "
                    "systemd will restart auditd",
                    time.time() - self.service.last_tick,
                )
