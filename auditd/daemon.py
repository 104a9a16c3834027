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
from auditd.policy.load import PolicyError, resolve_policy
from auditd.registry.dir import DirSource
from auditd.runner.audit import AuditContext
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
        "reasons": verdict.reasons,
        "audit_id": verdict.audit_id,
        "decided_at": verdict.created_at.isoformat(),
        "auditd": "https://github.com/auditd (see docs/)",
    }


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        resolve_policy(settings.policy, settings.policies_dir)  # a bad policy stops start-up, clearly
        self.engine = open_db(settings.database_url)
        self.sources = []
        if settings.registry_dir:
            self.sources.append(DirSource(settings.registry_dir, verdict_dir=settings.verdict_dir))
        self.ctx = AuditContext(self.engine, settings, on_verdict=make_write_back(self.sources))
        self.service = AuditService(self.engine, settings, self.sources, self.ctx)
        self.registry = build_registry(self.engine, self.state)
        self.http = HTTPServer(create_app(self.engine, self.registry, self.ready), settings.metrics_host,
                               settings.metrics_port)
        self.stopping = threading.Event()
        self.stopping_requested = threading.Event()

    def state(self) -> dict:
        return {"tick": self.service.last_tick, "polls": dict(self.service.last_poll)}

    def ready(self) -> bool:
        return self.service.scheduler.running and not self.stopping.is_set()

    def start(self) -> None:
        self.http.start()
        self.service.start()
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
        try:
            resolve_policy(self.settings.policy, self.settings.policies_dir)
            log.info("policy %r reloaded", self.settings.policy)
        except PolicyError as exc:
            log.error("policy reload failed, keeping the previous one: %s", exc)

    def run_forever(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping_requested.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping_requested.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload())
        self.start()
        interval = watchdog_interval_s()
        stale_after = max(60.0, 3 * self.settings.poll_interval_s)
        while not self.stopping_requested.wait(timeout=interval or 1.0):
            # Feed the watchdog only while the scheduler loop ticks: a stuck loop gets restarted.
            if interval and time.time() - self.service.last_tick < stale_after:
                sd_notify("WATCHDOG=1")
        self.stop()




def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
