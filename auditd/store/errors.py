"""Storage errors that pass: a locked SQLite file, a full disk, a lost PostgreSQL connection.

They say nothing about the audit or the checkpoint, so they are retried (with backoff) instead of
becoming an error verdict or killing a scheduler job. Anything else is not retryable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")

# Substrings of driver messages (sqlite3, psycopg) and the kind they are counted under.
_KINDS = (
    ("database is locked", "locked"),
    ("database table is locked", "locked"),
    ("database or disk is full", "disk_full"),
    ("no space left on device", "disk_full"),
    ("disk i/o error", "disk_io"),
    ("unable to open database file", "unavailable"),
    ("connection", "connection_lost"),  # psycopg: "connection failed", "server closed the connection", ...
    ("terminating", "connection_lost"),  # PostgreSQL: "terminating connection due to administrator command"
    ("server closed", "connection_lost"),
    ("the database system is", "connection_lost"),  # "... is starting up / shutting down"
)


def storage_error_kind(exc: BaseException) -> str | None:
    """'locked', 'disk_full', 'disk_io', 'unavailable', 'connection_lost', or None when `exc` is
    not a passing storage failure (a bug, a constraint violation, bad data: not retried)."""
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:  # ENOSPC outside the database
        return "disk_full"
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return "connection_lost"
    text = str(exc.orig if exc.orig is not None else exc).lower()
    for needle, kind in _KINDS:
        if needle in text:
            return kind
    return "operational" if isinstance(exc, OperationalError) else None


def error_kind(exc: BaseException) -> str:
    """For metrics: the storage kind, else the exception's class name."""
    return storage_error_kind(exc) or type(exc).__name__


def retry_storage(
    fn: Callable[[], T],
    what: str,
    *,
    deadline: float | None = None,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    should_stop: Callable[[], bool] = lambda: False,
) -> T:
    """Run `fn` (one whole transaction) until it succeeds, backing off while the storage error
    passes; re-raise anything else, or the storage error once `deadline` (time.monotonic) is past
    or `should_stop()` says so. `fn` must be safe to run again after a rolled-back attempt."""
    delay, failing_since, attempt = first_delay, None, 0
    while True:
        try:
            result = fn()
        except Exception as exc:
            kind = storage_error_kind(exc)
            now = time.monotonic()
            if kind is None or (deadline is not None and now + delay > deadline) or should_stop():
                raise
            attempt += 1
            failing_since = failing_since or now
            if attempt == 1:
                log.warning("%s: storage %s (%s); retrying with backoff", what, kind, short_message(exc))
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if failing_since is not None:
            log.info("%s: storage recovered after %.1f s (%d retries)", what, time.monotonic() - failing_since, attempt)
        return result


def short_message(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameters."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())[:200]
