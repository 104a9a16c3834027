"""Scheduler jobs that cannot die silently: each run is guarded, failures are logged once per
episode, counted per (job, kind) for /metrics, and the job backs off exponentially while failing;
readiness (/readyz, systemd's watchdog) is derived from when the loop last completed a cycle."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from auditd.logs import one_line
from auditd.store.errors import error_kind, short_message

log = logging.getLogger(__name__)


class JobHealth:
    def __init__(self, first_backoff_s: float = 1.0, max_backoff_s: float = 15.0):
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.errors: Counter[tuple[str, str]] = Counter()  # (job, kind) -> failures since start
        self.failing: dict[str, tuple[str, str, float]] = {}  # job -> (kind, message, failing since)
        self.last_ok: dict[str, float] = {}
        self._streak: Counter[str] = Counter()
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def run(self, job: str, fn: Callable[[], object]) -> bool:
        """Run one job now unless it is backing off; never raises. True when it ran and succeeded."""
        now = time.monotonic()
        if now < self._retry_at.get(job, 0.0):
            return False
        try:
            fn()
        except Exception as exc:
            self._failed(job, exc, now)
            return False
        self._succeeded(job)
        return True

    def _failed(self, job: str, exc: Exception, now: float) -> None:
        kind = error_kind(exc)
        with self._lock:
            self.errors[(job, kind)] += 1
            self._streak[job] += 1
            delay = min(self.first_backoff_s * 2 ** (self._streak[job] - 1), self.max_backoff_s)
            self._retry_at[job] = now + delay
            previous = self.failing.get(job)
            self.failing[job] = (kind, short_message(exc), previous[2] if previous else time.time())
        if previous is None or previous[0] != kind:
            log.error(
                "scheduler job %s failed (%s): %s; retrying with backoff",
                job,
                kind,
                one_line(exc),
                exc_info=kind == type(exc).__name__,
            )  # a traceback only for what is not a storage error
        else:
            log.warning(
                "scheduler job %s still failing (%s), attempt %d, next in %.0f s", job, kind, self._streak[job], delay
            )

    def _succeeded(self, job: str) -> None:
        with self._lock:
            self.last_ok[job] = time.time()
            previous = self.failing.pop(job, None)
            self._streak.pop(job, None)
            self._retry_at.pop(job, None)
        if previous:
            log.info("scheduler job %s recovered after %.1f s of %s", job, time.time() - previous[2], previous[0])

    def due_retries(self) -> list[str]:
        """Failing jobs whose backoff has elapsed: run them again now rather than at their next
        interval (maintain runs every 30 s), so recovery is seen within the backoff."""
        now = time.monotonic()
        with self._lock:
            return [job for job in self.failing if self._retry_at.get(job, 0.0) <= now]

    def reasons(self) -> list[str]:
        with self._lock:
            return [
                f"{job} failing since {time.time() - since:.0f} s: {kind}: {msg}"
                for job, (kind, msg, since) in sorted(self.failing.items())
            ]

    def error_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.errors)
