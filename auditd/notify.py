"""sd_notify without a dependency: READY=1, WATCHDOG=1, STOPPING=1, STATUS= to $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one notification; False when not run under systemd (no NOTIFY_SOCKET) or when the send
    failed. Never raises: like libsystemd's sd_notify, a missing or refusing socket (e.g. during
    `systemctl daemon-reexec`) must not take the daemon down or break its shutdown."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify %r to NOTIFY_SOCKET failed: %s", message.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec (systemd passes WATCHDOG_USEC), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6
