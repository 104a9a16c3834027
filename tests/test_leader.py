"""Leader election on a real PostgreSQL server: one holder of the advisory lock at a time, a leader
whose session is cut steps down, a follower takes over; SQLite is always its own leader."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from auditd.scheduler.leader import Leadership
from auditd.store.db import open_db
from tests.pg_server import BIN, PgServer


@pytest.fixture(scope="module")
def pg_engine():
    if not BIN:
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql; .ci/setup installs it)")
    server = PgServer(port_offset=11).start()
    engine = open_db(server.url)
    try:
        yield engine
    finally:
        engine.dispose()
        server.destroy()


def test_one_leader_and_a_takeover_when_its_session_dies(pg_engine):
    elected = []
    a = Leadership(pg_engine, 0.2, "a", on_elected=lambda: elected.append("a"))
    b = Leadership(pg_engine, 0.2, "b", on_elected=lambda: elected.append("b"))
    lost = []
    a.on_lost = lambda: lost.append("a")
    try:
        assert a.check() and not b.check() and not b.check()
        # The database ends the leader's session (a dead host, a failover of PostgreSQL, an operator).
        with pg_engine.connect() as c:
            c.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'auditd-leader a'"
                )
            )
            c.commit()
        assert not a.check() and lost == ["a"]  # it notices at its next check and steps down
        assert b.check() and not a.check()
        assert elected == ["a", "b"]
        b.stop()  # a clean stop hands the lock back at once
        assert a.check()
    finally:
        a.stop()
        b.stop()


def test_sqlite_is_always_its_own_leader(tmp_path):
    engine = open_db(f"sqlite:///{tmp_path / 'a.db'}")
    one = Leadership(engine, 0.2, "x")
    assert one.is_leader and one.check()
    one.start()
    one.stop()
