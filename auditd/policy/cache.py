"""Policies as the daemon holds them: loaded once, replaced only by a successful reload (SIGHUP).

A policy file edited into something broken must not change what the daemon enforces: the reload
reports the error in one line and the last good version stays in force."""

from __future__ import annotations

import threading
from pathlib import Path

from auditd.policy.load import PolicyError, resolve_policy
from auditd.policy.model import Policy


class PolicyCache:
    def __init__(self, policies_dir: Path):
        self.policies_dir = policies_dir
        self._by_name: dict[str, Policy] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Policy:
        """The policy in force under `name` (loaded on first use; raises PolicyError if it never loaded)."""
        with self._lock:
            if name not in self._by_name:
                self._by_name[name] = resolve_policy(name, self.policies_dir)
            return self._by_name[name]

    def reload(self) -> dict[str, str | None]:
        """Re-read every policy in use; name -> None if reloaded, else the error (old one kept)."""
        with self._lock:
            names = list(self._by_name)
        result: dict[str, str | None] = {}
        for name in names:
            try:
                fresh = resolve_policy(name, self.policies_dir)
            except PolicyError as exc:
                result[name] = str(exc)
                continue
            with self._lock:
                self._by_name[name] = fresh
            result[name] = None
        return result
