"""The daemon's life under systemd, with the test playing systemd: it binds the NOTIFY_SOCKET
datagram socket and reads what auditd sends. READY=1 once /readyz answers, WATCHDOG=1 while the
scheduler loop ticks (and not when it stalls), SIGHUP re-checks the policy without dying on a bad
one, SIGTERM -> STOPPING=1 and exit 0 well within TimeoutStopSec. (SIGTERM and SIGKILL in the middle
of an audit, and its resumption, are tested in test_restart.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from auditd.daemon import Daemon
from auditd.notify import sd_notify
from auditd.settings import Settings
from tests.conftest import QUICK_POLICY, wait_for, write_policy

TIMEOUT_STOP_S = 90  # TimeoutStopSec of systemd/auditd-ai.service
CHANGED_POLICY = QUICK_POLICY.replace("limit_per_category: 2", "limit_per_category: 3")
assert CHANGED_POLICY != QUICK_POLICY
MALFORMED_POLICY = "name: broken\nprobes:\n  text: [\n"  # unclosed flow sequence: invalid YAML


class NotifyListener:
    """systemd's side of sd_notify: a bound AF_UNIX datagram socket; collects (time, message)."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.time(), data.decode()))

    def times(self, field: str, since: float = 0.0) -> list[float]:
        """When messages carrying `field` (e.g. "WATCHDOG=1") arrived after `since`."""
        return [t for t, m in list(self.messages) if field in m.split("\n") and t > since]

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_lines(path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a non-JSON line (e.g. a warning printed by a library)
            continue
    return out


def last_poll(url: str) -> float:
    """auditd_registry_last_poll_timestamp_seconds of the dir source, from /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(f"{url}/metrics", timeout=5).text
    return max(
        (
            s.value
            for f in text_string_to_metric_families(body)
            if f.name == "auditd_registry_last_poll_timestamp_seconds"
            for s in f.samples
        ),
        default=0.0,
    )


def test_daemon_under_systemd_ready_watchdog_reload_and_stop(tmp_path):
    # An abstract-namespace socket ("@name"), as systemd itself uses when it can; it also avoids the
    # 108-byte limit on socket paths under pytest's deep temp folders.
    name = f"auditd-test-{uuid.uuid4().hex}"
    listener = NotifyListener("\0" + name)
    policy = write_policy(tmp_path, QUICK_POLICY)
    (tmp_path / "registry").mkdir()
    port = free_port()
    env = dict(
        os.environ,
        NOTIFY_SOCKET="@" + name,
        WATCHDOG_USEC="2000000",  # WatchdogSec=2 -> a ping per 1 s
        AUDITD_HOME=str(tmp_path / "home"),
        AUDITD_REGISTRY_DIR=str(tmp_path / "registry"),
        AUDITD_POLICY=str(policy),
        AUDITD_METRICS_PORT=str(port),
        AUDITD_POLL_INTERVAL_S="0.5",
    )
    # systemd sets WATCHDOG_PID to the main pid; it cannot be known before the spawn, and unset means "you".
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "auditd.cli", "run"], env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        # READY=1 only once the HTTP server answers and the scheduler runs.
        wait_for(lambda: listener.times("READY=1") or proc.poll() is not None, 90, what="READY=1")
        assert proc.poll() is None, log_path.read_text()
        r = httpx.get(f"{url}/readyz", timeout=5)
        assert r.status_code == 200 and r.json()["ready"] is True
        [ready_at] = listener.times("READY=1")
        assert not listener.times("WATCHDOG=1", since=0) or min(listener.times("WATCHDOG=1")) > ready_at
        assert any("STATUS=auditing" in m for _, m in listener.messages)

        # WATCHDOG=1 keeps arriving while the daemon idles.
        wait_for(lambda: len(listener.times("WATCHDOG=1", since=ready_at)) >= 3, 15, what="three WATCHDOG=1")

        # SIGHUP with a malformed policy: a one-line error, the daemon keeps running and pinging.
        policy.write_text(MALFORMED_POLICY)
        hup_at = time.time()
        proc.send_signal(signal.SIGHUP)
        failed = wait_for(
            lambda: [e for e in log_lines(log_path) if "policy reload failed" in e["msg"]], 15, what="the reload error"
        )
        assert failed[0]["level"] == "error" and str(policy) in failed[0]["msg"] and "\n" not in failed[0]["msg"]
        # The last good policy stays in force: registry polls (every 0.5 s here) go on under it.
        assert "keeping the policy in force" in failed[0]["msg"]
        wait_for(lambda: last_poll(url) > hup_at, 15, what="a registry poll under the policy in force")
        wait_for(lambda: len(listener.times("WATCHDOG=1", since=hup_at)) >= 2, 15, what="pings after a bad reload")
        assert not [e for e in log_lines(log_path) if "registry poll skipped" in e["msg"]]
        assert proc.poll() is None
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        # SIGHUP with a valid, changed policy: reloaded, and registry polls go on.
        policy.write_text(CHANGED_POLICY)
        fixed_at = time.time()
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: [e for e in log_lines(log_path) if "reloaded" in e["msg"]], 15, what="the reload")
        wait_for(lambda: last_poll(url) > fixed_at, 15, what="a successful registry poll after the fix")
        assert proc.poll() is None
        assert not [e for e in log_lines(log_path) if "exc" in e], "a traceback was logged"

        # SIGTERM: STOPPING=1, then exit 0, well within TimeoutStopSec (an idle daemon has nothing to wait for).
        term_at = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=TIMEOUT_STOP_S / 3)
        assert rc == 0, log_path.read_text()
        assert listener.times("STOPPING=1", since=term_at)
        assert not listener.times("WATCHDOG=1", since=max(listener.times("STOPPING=1")))
        assert any("stopping" in e["msg"] for e in log_lines(log_path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()


@pytest.fixture
def notify_env(tmp_path, monkeypatch):
    """NOTIFY_SOCKET and a fast watchdog (WATCHDOG_USEC=0.4 s -> a ping per 0.2 s) for in-process daemons."""
    path = tmp_path / "notify.sock"
    if len(str(path)) > 100:  # AF_UNIX path limit
        pytest.skip("temp path too long for a unix socket")
    listener = NotifyListener(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()


def test_watchdog_starves_while_the_scheduler_loop_is_stuck_and_resumes_after(tmp_path, notify_env, caplog):
    # The shortest stale window allowed (5 s, > the 2 s dispatch tick), so the stall shows quickly.
    settings = Settings(
        home=tmp_path / "home",
        policy=str(write_policy(tmp_path, QUICK_POLICY)),
        metrics_port=0,
        poll_interval_s=0.5,
        watchdog_stale_s=5,
    )
    d = Daemon(settings)
    d.start()
    watcher = threading.Thread(target=d.watch, daemon=True)
    watcher.start()
    try:
        wait_for(lambda: len(notify_env.times("WATCHDOG=1")) >= 3, 10, what="WATCHDOG=1 while ticking")
        assert d.scheduler_alive()

        # A stuck loop, for real: the scheduler runs no job at all (as when its executor is wedged).
        d.service.scheduler.pause()
        paused_at = time.time()
        wait_for(lambda: not d.scheduler_alive(), settings.watchdog_stale_s + 5, what="the loop to go stale")
        stale_at = time.time()
        time.sleep(1.5)  # several watchdog intervals (0.2 s) with a stale loop
        assert not notify_env.times("WATCHDOG=1", since=stale_at + 0.3), "the watchdog was fed by a stuck loop"
        # It was fed during the stale window's grace period and starved only after it.
        assert notify_env.times("WATCHDOG=1", since=paused_at)
        assert max(notify_env.times("WATCHDOG=1")) >= d.service.last_tick + settings.watchdog_stale_s - 0.5
        assert any(
            "no longer feeding the watchdog" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records
        )

        # The loop runs again (the missed dispatch is coalesced into one run): pings resume.
        d.service.scheduler.resume()
        resumed_at = time.time()
        wait_for(lambda: notify_env.times("WATCHDOG=1", since=resumed_at), 10, what="pings after the loop resumed")
        assert d.scheduler_alive()
    finally:
        d.stopping_requested.set()
        watcher.join(timeout=5)
        d.stop()
    assert not watcher.is_alive()
    assert notify_env.times("STOPPING=1")


def test_default_stale_window_follows_the_poll_interval(tmp_path):
    policy = str(write_policy(tmp_path, QUICK_POLICY))
    assert Settings(home=tmp_path, policy=policy, poll_interval_s=30).watchdog_stale_s is None
    for poll, stale in ((10, 60), (45, 135)):  # max(60, 3 x poll)
        d = Daemon(Settings(home=tmp_path / str(poll), policy=policy, poll_interval_s=poll, metrics_port=0))
        assert d.stale_after_s == stale
        d.engine.dispose()
    with pytest.raises(ValueError):  # below the 2 s dispatch tick plus margin: it would starve a healthy loop
        Settings(home=tmp_path, policy=policy, watchdog_stale_s=1)


def test_sd_notify_never_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False  # not under systemd
    # A socket path nobody listens on (systemd re-executing, a stale environment): False, no exception,
    # so neither the watchdog loop nor shutdown can be broken by it.
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sd_notify("WATCHDOG=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@auditd-nobody-{uuid.uuid4().hex}")
    assert sd_notify("STOPPING=1") is False
