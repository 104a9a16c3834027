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
from auditd.registry.dir import DirSource
from auditd.registry.webhook import resume_deliveries
from auditd.runner.audit import AuditContext
from auditd.scheduler.reaudit import after_reload, watch_policies
from auditd.scheduler.service import AuditService
from auditd.settings import Settings
from auditd.store.db import open_db

log = logging.getLogger(__name__)


def make_write_back(sources: list):
    by_id = {s.id: s for s in sources}

    def write_back(checkpoint, verdict) -> None:
        src = by_id.get(checkpoint.source)
        if src is not None and hasattr(src, "write_verdict"):
            src.write_verdict(checkpoint.path, checkpoint.id, verdict_document(checkpoint, verdict))

    return write_back


def verdict_document(checkpoint, verdict) -> dict:
    return {
        "checkpoint": checkpoint.id,
        "model": checkpoint.model,
        "outcome": verdict.outcome,
        "policy": verdict.policy,
        "policy_digest": getattr(verdict, "policy_digest", None),  # the policy version that decided it
        "reasons": verdict.reasons,
        "audit_id": verdict.audit_id,
        "decided_at": verdict.created_at.isoformat(),
        "auditd": "https://github.com/auditd (see docs/)",
    }


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = open_db(settings.database_url)
        self.sources = []
        if settings.registry_dir:
            self.sources.append(DirSource(settings.registry_dir, settle_s=settings.registry_settle_s,
                                          verdict_dir=settings.verdict_dir))
        if settings.mlflow_tracking_uri:
            from auditd.registry.mlflow import MlflowSource

            self.sources.append(MlflowSource(settings.mlflow_tracking_uri, settings.home / "mlflow", engine=self.engine,
                                             models=settings.mlflow_models, alias_on_pass=settings.mlflow_alias_on_pass))
        self.ctx = AuditContext(self.engine, settings, on_verdict=make_write_back(self.sources))
        self.ctx.policies.get(settings.policy)  # a bad policy stops start-up, clearly
        self.service = AuditService(self.engine, settings, self.sources, self.ctx)
        self.registry = build_registry(self.engine, self.state)
        app = create_app(self.engine, self.registry, self.ready, settings=settings, poll=self.service.poll_sources)
        self.http = HTTPServer(app, settings.metrics_host, settings.metrics_port)
        self.stopping = threading.Event()
        self.stopping_requested = threading.Event()

    def state(self) -> dict:
        return {"tick": self.service.last_tick, "polls": dict(self.service.last_poll)}

    def ready(self) -> bool:
        return self.service.scheduler.running and not self.stopping.is_set()

    def start(self) -> None:
        self.http.start()
        self.service.start()
        resume_deliveries(self.engine, self.settings)  # webhooks accepted before a crash, not yet handed over
        watch_policies(self)  # verdicts decided under an older version of their policy follow it
        log.info("auditd serving %s/metrics; registry=%s db=%s", self.http.url, self.settings.registry_dir,
                 _redact(self.settings.database_url))
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
        # The dispatch job ticks every 2 s (maintain every 30 s); a paused, dead or wedged scheduler stops both.
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
                log.error("scheduler loop has not run for %.0f s; no longer feeding the watchdog, systemd will "
                          "restart auditd", time.time() - self.service.last_tick)


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
