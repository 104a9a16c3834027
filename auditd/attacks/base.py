"""What the text and diffusion GRPO attacks share: the probe run, the private work dir, the points.

`run_attack_probe` (auditd.attacks.run) opens the probe run, builds the attack the probe's
modality names, runs it and marks the run done or error; an `Attack` subclass trains and measures.
Both resume from their last stored `AttackPoint` and keep at most the final adapter.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlmodel import col, select

from auditd.attacks.config import AttackConfig
from auditd.attacks.containment import PrivateWorkDir
from auditd.runner.session import OpenedRun, ProbeSession
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.models import ProbeRun, utcnow

log = logging.getLogger(__name__)

ADAPTER_FILE = "adapter-{step}.safetensors"
OPTIMIZER_FILE = "optimizer-{step}.pt"


def open_attack_run(probe_session: ProbeSession, plan, probe) -> tuple[PrivateWorkDir, OpenedRun]:
    """The attack's private work dir and its probe run; a finished run's leftover work dir (a crash
    between summary and cleanup) is removed unless the summary says the adapter was kept."""
    settings = probe_session.settings
    workdir = PrivateWorkDir(settings.work_dir, probe_session.audit_id, plan.id, settings.registry_dir)
    opened = probe_session.open_probe_run(plan.id, len(probe.items()))
    if opened.finished and workdir.exists() and not (opened.summary or {}).get("adapter_kept"):
        workdir.remove()
    return workdir, opened


def mark_probe_run(
    engine, audit_id: int, probe_id: str, *, status: str, summary: dict | None = None, error: str | None = None
) -> None:
    with session(engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit_id, ProbeRun.probe_id == probe_id)).one()
        run.status, run.error, run.finished_at = status, error, utcnow()
        if summary is not None:
            run.summary = summary
        s.add(run)
        s.commit()


class Attack:
    """One attack's state between its training loop and the store."""

    def __init__(
        self,
        probe_session: ProbeSession,
        policy,
        plan,
        probe,
        backend: Any,
        judges: dict,
        config: AttackConfig,
        workdir: PrivateWorkDir,
    ) -> None:
        self.session, self.policy, self.plan, self.probe, self.workdir = probe_session, policy, plan, probe, workdir

    @classmethod
    def check_backend(cls, plan, backend: Any) -> None:
        """Raise AuditFailed when `backend` cannot be trained by this attack."""
        raise NotImplementedError

    def run(self) -> dict:
        """Train and measure; the probe run's summary."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the attack built (a reward judge, scratch images); runs whatever happened."""

    def points(self) -> list[AttackPoint]:
        with session(self.session.engine) as s:
            return list(
                s.exec(
                    select(AttackPoint)
                    .where(AttackPoint.audit_id == self.session.audit_id, AttackPoint.probe_id == self.plan.id)
                    .order_by(col(AttackPoint.step))
                )
            )

    def keep_or_remove(self, last_step: int, keep_adapter: bool) -> str | None:
        """Delete the work dir, or keep only the final adapter (forensics); returns the kept path."""
        name = ADAPTER_FILE.format(step=last_step)
        if keep_adapter and last_step > 0 and (self.workdir.path / name).is_file():
            kept = self.workdir.keep_only({name})
            return str(kept[0]) if kept else None
        self.workdir.remove()
        return None

    def progress(self, step: int, total: int) -> None:
        self.session.progress(self.plan.id, step, total)
