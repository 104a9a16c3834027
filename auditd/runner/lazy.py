"""The audited model's backend, built on first use: an audit whose samples were all reused from
earlier audits (auditd.runner.reuse) never loads the model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auditd.backends.base import Closable
from auditd.stage import stage


class LazyBackend:
    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._backend: Any = None

    @property
    def built(self) -> bool:
        return self._backend is not None

    def get(self) -> Any:
        if self._backend is None:
            with stage("load"):  # where a memory kill or a timeout of the child is reported
                self._backend = self._build()
        return self._backend

    def __getattr__(self, name: str) -> Any:  # only for names this class does not define
        return getattr(self.get(), name)

    def close(self) -> None:
        if isinstance(self._backend, Closable):
            self._backend.close()
