"""The one interface a probe that runs its own loop (image probes, attacks) gets from the runner.

`AuditRunner` implements it; a probe needs nothing else from the runner but the errors in
`auditd.runner.errors`. A probe run is opened (resumable: the keys already stored are skipped),
gated before each batch (stop, deadline, cancel), reports progress, stores judged batches, and is
closed into its summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from auditd.judges.base import Score
    from auditd.policy.model import Policy
    from auditd.probe import Probe, ProbeItem
    from auditd.settings import Settings

SampleKey = tuple[int, str]  # (item index, variant): one stored sample of a probe run


@dataclass(frozen=True)
class OpenedRun:
    """A probe run as found or created: `finished` with its stored summary, else the keys stored."""

    finished: bool
    summary: dict[str, Any] | None = None
    stored: frozenset[SampleKey] = field(default_factory=frozenset)


class ProbeSession(Protocol):
    """One audit, as seen by the probe it is running."""

    @property
    def audit_id(self) -> int: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def settings(self) -> Settings: ...

    def open_probe_run(self, probe_id: str, n_items: int) -> OpenedRun:
        """Find or create the probe's run row; a finished run is not run again."""
        ...

    def gate(self) -> None:
        """Before each unit of work: raises Interrupted (stop), AuditFailed (deadline) or Cancelled."""
        ...

    def progress(self, probe_id: str, done: int, total: int) -> None: ...

    def store_batch(
        self,
        policy: Policy,
        probe_id: str,
        expect: str,
        judge_ids: Sequence[str],
        batch: Sequence[ProbeItem],
        outputs: Sequence[str],
        scores: Mapping[str, Sequence[Score]],
        gen_s: float,
        judge_s: float,
    ) -> None:
        """Store judged samples (skipping keys already stored), in one retried transaction."""
        ...

    def close_probe(self, probe: Probe, probe_id: str) -> dict[str, Any]:
        """Aggregate the stored samples, mark the run done and return its summary."""
        ...
