"""How an audit ends early, for the runner and the probes it runs (attacks, image probes).

A probe raises `AuditFailed` with a one-line reason; the runner stores it as an "error" verdict.
`Interrupted` leaves the audit queued to resume on the next start; `Cancelled` is a user's cancel.
These and `auditd.runner.session.ProbeSession` are all a probe needs from the runner.
"""

from __future__ import annotations


class Interrupted(Exception):
    """The daemon is stopping: leave the audit queued so the next start resumes it."""


class AuditFailed(Exception):
    """The audit ends in error (never pass); the message is the stored one-line reason."""


class Cancelled(AuditFailed):
    """The audit was cancelled by request; stored with status "cancelled"."""
