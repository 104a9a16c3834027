"""Where an audit is right now ("load", "chat template rendering", "generate", "judge", ...).

The audit child process reports its stage so that a supervisor that has to kill it (deadline,
memory) can say where it was: "timeout after 30 s in chat template rendering". Code anywhere in
the audit path marks its stage with `with stage("..."):`; listeners (the child's reporter) are
told of every change. Thread-local stacks would be overkill: one audit runs per process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_stack: list[str] = []
_listeners: list[Callable[[str], None]] = []


def current() -> str:
    with _lock:
        return _stack[-1] if _stack else "idle"


def add_listener(fn: Callable[[str], None]) -> None:
    with _lock:
        _listeners.append(fn)


def remove_listener(fn: Callable[[str], None]) -> None:
    with _lock:
        if fn in _listeners:
            _listeners.remove(fn)


def _notify(name: str) -> None:
    for fn in list(_listeners):
        try:
            fn(name)
        except Exception:  # a broken listener must not break the audit
            pass


@contextmanager
def stage(name: str) -> Iterator[None]:
    with _lock:
        _stack.append(name)
    _notify(name)
    try:
        yield
    except BaseException as exc:
        if not hasattr(exc, "_auditd_stage"):  # the innermost stage it left: where it went wrong
            try:
                setattr(exc, "_auditd_stage", name)  # noqa: B010 - a tag BaseException does not declare
            except AttributeError:  # an exception type without a __dict__
                pass
        raise
    finally:
        with _lock:
            if _stack and _stack[-1] == name:
                _stack.pop()
            elif name in _stack:
                _stack.remove(name)
        _notify(current())


def stage_of(exc: BaseException) -> str:
    """The stage an exception was raised in (stages are left as it propagates), else the current one."""
    return getattr(exc, "_auditd_stage", None) or current()
