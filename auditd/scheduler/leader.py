"""Which replica leads. Several daemons may share one PostgreSQL database: every replica serves the
API and /metrics and claims audits (claims are compare-and-set, queue.py), but only the leader
runs the registry polls and the periodic recovery/write-back jobs (APScheduler 3 keeps its jobs
per process: two schedulers would both run them).

The leader holds a PostgreSQL session-level advisory lock on a connection of its own. PostgreSQL
releases the lock the moment that session ends, so a leader killed with kill -9 frees it at once
(the kernel closes its socket); a follower tries to take it every `leader_lease_s`, so a dead
leader is replaced within one period (two when the leader's host vanishes and TCP keepalives,
set to the same period, have to notice). docs/scaling.md argues this against a lease row.

SQLite admits one daemon per database file: it is always the leader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

LOCK_KEY = 0x61756469746400  # "auditd\0": one cluster-wide lock per database


class Leadership:
    """Tries to become (and checks that it still is) the leader every `period_s`, in its own thread:
    the check must go on while APScheduler's jobs are busy or failing."""

    def __init__(
        self,
        engine: Engine,
        period_s: float,
        replica: str,
        on_elected: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ):
        self.engine, self.period_s, self.replica = engine, period_s, replica
        self.on_elected, self.on_lost = on_elected, on_lost
        self.shared = engine.dialect.name == "postgresql"
        self.is_leader = not self.shared
        self.elected_at: float | None = time.time() if self.is_leader else None
        self._conn: Connection | None = None
        self._lock_engine: Engine | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.shared:
            return
        self._thread = threading.Thread(target=self._loop, name="leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s + 5)
        self._release()
        self.is_leader = not self.shared

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # a bug here must not end the thread: the replica would never lead
                log.exception("leader check failed")
            self._stop.wait(self.period_s)

    def check(self) -> bool:
        """One round: a leader confirms its session is alive, a follower tries to take the lock."""
        if not self.shared:
            return True
        if self.is_leader:
            if self._alive():
                return True
            log.error("replica %s lost its leader session; stepping down", self.replica)
            self._step_down()
            return False
        if self._try_lock():
            self.is_leader, self.elected_at = True, time.time()
            log.info("replica %s is the leader now", self.replica)
            if self.on_elected:
                self.on_elected()
        return self.is_leader

    # -- the dedicated session ---------------------------------------------------------------------
    def _connect(self) -> Connection:
        if self._lock_engine is None:
            # Its own engine (no pool): the lock lives and dies with exactly this one session. TCP
            # keepalives bound how long a vanished host keeps it (unix sockets ignore them).
            period = max(1, int(self.period_s))
            args = {
                "keepalives": 1,
                "keepalives_idle": period,
                "keepalives_interval": period,
                "keepalives_count": 1,
                "connect_timeout": max(2, period),
                "application_name": f"auditd-leader {self.replica}"[:63],
            }
            self._lock_engine = create_engine(self.engine.url, poolclass=NullPool, connect_args=args)
        return self._lock_engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _try_lock(self) -> bool:
        try:
            if self._conn is None:
                self._conn = self._connect()
            return bool(self._conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
        except Exception as exc:  # the database is away: stay a follower, try again next period
            log.warning("replica %s could not try the leader lock: %s", self.replica, " ".join(str(exc).split())[:200])
            self._release()
            return False

    def _alive(self) -> bool:
        try:
            return self._conn is not None and self._conn.execute(text("SELECT 1")).scalar() == 1
        except Exception:
            return False

    def _step_down(self) -> None:
        self.is_leader, self.elected_at = False, None
        self._release()
        if self.on_lost:
            self.on_lost()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if self.is_leader:  # hand over now: the server ends a closed session a moment later
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                conn.close()  # closing the session releases the lock in any case
            except Exception as exc:  # already broken: the server has ended the session, and the lock
                log.debug("closing the leader session: %s", exc)
        if self._lock_engine is not None:
            self._lock_engine.dispose()
            self._lock_engine = None
