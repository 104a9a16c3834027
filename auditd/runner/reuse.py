"""Incremental audits: before the runner starts, seed a new audit with the compatible work stored
by the checkpoint's earlier audits, so the runner's resume logic generates only the rest.

A checkpoint's id is its content digest, so an earlier audit of it saw the same weights. A stored
sample is compatible when its probe, item, variant and prompt are unchanged and its probe run was
made under the same generation digest (auditd.policy.versions):
- same judge digest too: the sample and its judge scores are copied as they are;
- judges changed, outputs kept (`keep_outputs`), a text probe: the stored output is judged again
  by the new judges, nothing is generated;
- otherwise it is generated again.
Samples a judge could not score are never copied (a transient judge failure gets another try).
An attack probe (GRPO) is reused whole, points and summary, when its finished run has the same
generation and judge digests; its `broken` flag is recomputed under the new thresholds.

The same digests protect a resumed audit: if the policy changed while it was interrupted, the
probe runs made under the old version are discarded, never mixed with new samples.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete
from sqlmodel import col, select

from auditd import plugins
from auditd.judges.base import JudgeInput
from auditd.policy.model import Policy, ProbePlan
from auditd.policy.versions import generation_digest, judge_digest, judge_ids, version_of
from auditd.probe import ProbeItem
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.models import (
    AuditRun,
    CategoryResult,
    CheckpointRow,
    JudgeErrorCount,
    JudgeScoreRow,
    ProbeRun,
    Sample,
    utcnow,
)

log = logging.getLogger(__name__)

SAMPLE_FIELDS = (
    "probe_id",
    "item_index",
    "variant",
    "category",
    "prompt",
    "output",
    "harmful",
    "refused",
    "score",
    "judge_error",
    "degenerate",
    "decided_by",
    "escalated",
    "judges_agree",
    "early_stop",
)
SCORE_FIELDS = ("judge", "harmful", "refused", "score", "raw", "error", "categories")


@dataclass
class ReuseReport:
    planned: int = 0  # samples the static probes ask for
    copied: int = 0  # copied with their judgements
    rejudged: int = 0  # stored outputs judged again by changed judges
    probes_reused: list[str] = field(default_factory=list)  # attack probes taken whole
    running: list[str] = field(default_factory=list)  # probes that still generate
    sources: list[int] = field(default_factory=list)  # earlier audits work came from
    digests: dict[str, dict] = field(default_factory=dict)  # probe id -> the sample keys' digests

    @property
    def reused(self) -> int:
        return self.copied + self.rejudged

    def message(self) -> str | None:
        """One line for the user, e.g. "reused 41 of 41 static samples; running grpo.fakenews"."""
        if not self.reused and not self.probes_reused:
            return None
        parts = []
        if self.planned:
            again = f" ({self.rejudged} judged again)" if self.rejudged else ""
            parts.append(f"reused {self.reused} of {self.planned} static samples{again}")
        if self.probes_reused:
            parts.append(f"reused {', '.join(self.probes_reused)}")
        parts.append(f"running {', '.join(self.running)}" if self.running else "nothing to generate")
        return "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "planned": self.planned,
            "copied": self.copied,
            "rejudged": self.rejudged,
            "probes_reused": self.probes_reused,
            "running": self.running,
            "sources": self.sources,
            "message": self.message(),
        }


def planned_items(policy: Policy, plan: ProbePlan, probe, kind: str) -> list[ProbeItem]:
    """The (item, variant) keys the runner will store for a probe, in the runner's order."""
    from auditd.runner.items import select_items

    items = select_items(probe, plan)
    if kind == "t2i" and probe.modality == "t2i":
        return [
            ProbeItem(it.index, it.category, it.prompt, variant=f"s{j}", system=None)
            for it in items
            for j in range(policy.images.n_per_prompt)
        ]
    return items


def is_attack(probe) -> bool:
    return bool(probe.attack)


def prepare_audit(
    runner, policy: Policy, checkpoint: CheckpointRow, plan: list[ProbePlan], judges: dict
) -> ReuseReport:
    """Stamp the audit with its policy version and seed it with compatible stored work."""
    version = version_of(policy)
    report = ReuseReport()
    _backfill(runner.ctx.engine, checkpoint.id)
    for p in plan:
        try:
            probe = plugins.resolve(f"probe:{p.id}")()
        except Exception:  # the runner reports an unknown probe itself, as the audit's error
            report.running.append(p.id)
            continue
        _seed_probe(runner, policy, checkpoint, p, probe, judges, report)
    with session(runner.ctx.engine) as s:
        audit = s.get_one(AuditRun, runner.audit_id)
        audit.policy_digest, audit.plan_digest, audit.decision_digest = version.digest, version.plan, version.decision
        kept = audit.reuse if audit.reuse and not (report.reused or report.probes_reused) else report.as_dict()
        # Probe runs the runner creates itself carry no digests yet: they are filled from here (_backfill).
        audit.reuse = {**kept, "digests": report.digests}
        s.add(audit)
        s.commit()
    if msg := report.message():
        log.info("audit %s: %s", runner.audit_id, msg)
    return report


def _seed_probe(runner, policy, checkpoint, p: ProbePlan, probe, judges: dict, report: ReuseReport) -> None:
    kind = checkpoint.kind
    gen, jdg = generation_digest(policy, p, probe, kind), judge_digest(policy, p, probe)
    report.digests[p.id] = {"gen": gen, "judge": jdg, "kept": policy.keep_outputs}
    items = [] if is_attack(probe) else planned_items(policy, p, probe, kind)
    report.planned += len(items)
    engine, audit_id = runner.ctx.engine, runner.audit_id
    with session(engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit_id, ProbeRun.probe_id == p.id)).first()
        if run is not None and run.gen_digest is not None and (run.gen_digest, run.judge_digest) != (gen, jdg):
            log.warning(
                "audit %s probe %s: the policy changed while the audit was interrupted; its stored work "
                "under the old version is discarded",
                audit_id,
                p.id,
            )
            discard_probe_run(s, audit_id, p.id)
            s.commit()
            run = None
        if run is not None:
            if run.gen_digest is None:  # stored before versions were recorded: resumed as it is
                run.gen_digest, run.judge_digest, run.outputs_kept = gen, jdg, policy.keep_outputs
                s.add(run)
                s.commit()
            _count_resumed(s, run, items, report)
            return
        sources = s.exec(
            select(ProbeRun)
            .join(AuditRun, col(AuditRun.id) == col(ProbeRun.audit_id))
            .where(
                AuditRun.checkpoint_id == checkpoint.id,
                AuditRun.id != audit_id,
                ProbeRun.probe_id == p.id,
                ProbeRun.gen_digest == gen,
            )
            .order_by(col(AuditRun.id).desc())
        ).all()
    # The probe run is created here only when work is reused; otherwise the runner creates it when
    # the probe starts (its started_at stays true) and _backfill gives it its digests later.
    new_run = ProbeRun(
        audit_id=audit_id,
        probe_id=p.id,
        n_items=len(items) if items else len(probe.items()),
        gen_digest=gen,
        judge_digest=jdg,
        outputs_kept=policy.keep_outputs,
    )
    if is_attack(probe):
        source = next((r for r in sources if r.status == "done" and r.judge_digest == jdg), None)
        if source is None:
            report.running.append(p.id)
            return
        _copy_attack(runner, policy, new_run, source)
        report.probes_reused.append(p.id)
        report.sources.append(source.audit_id)
        return
    copied, rejudge = _copy_samples(runner, policy, new_run, items, sources, jdg, kind)
    report.copied += copied
    if rejudge:
        report.rejudged += _rejudge(runner, policy, p, probe, rejudge, judges)
    report.sources.extend(sorted({r.audit_id for r in sources} - set(report.sources)))
    if _left(engine, audit_id, p.id, items):
        report.running.append(p.id)


def _count_resumed(s, run: ProbeRun, items: list, report: ReuseReport) -> None:
    if run.status == "done":
        return
    if not items or _stored(s, run.audit_id, run.probe_id) < len(items):
        report.running.append(run.probe_id)


def _stored(s, audit_id: int, probe_id: str) -> int:
    return len(s.exec(select(Sample.id).where(Sample.audit_id == audit_id, Sample.probe_id == probe_id)).all())


def _left(engine, audit_id: int, probe_id: str, items: list) -> bool:
    with session(engine) as s:
        return _stored(s, audit_id, probe_id) < len(items)


def _copy_samples(
    runner, policy, new_run: ProbeRun, items: list[ProbeItem], sources: Sequence[ProbeRun], jdg: str, kind: str
) -> tuple[int, list[tuple[ProbeItem, str]]]:
    """Copy compatible samples (newest audit first) under a new probe run, created if anything is
    reused; returns (copied, [(item, output) to judge again])."""
    probe_id = new_run.probe_id
    wanted = {(it.index, it.variant): it for it in items}
    copied = 0
    rejudge: dict[tuple[int, str], tuple[ProbeItem, str]] = {}
    with session(runner.ctx.engine) as s:
        for src in sources:
            same_judges = src.judge_digest == jdg
            rows = s.exec(select(Sample).where(Sample.audit_id == src.audit_id, Sample.probe_id == probe_id)).all()
            for row in rows:
                key = (row.item_index, row.variant)
                it = wanted.get(key)
                if it is None or row.prompt != it.prompt or row.category != it.category:
                    continue  # not asked for, or the probe's data changed under the same index
                if same_judges and not row.judge_error:
                    _copy_sample(s, runner.audit_id, row, policy.keep_outputs)
                    del wanted[key]
                    rejudge.pop(key, None)
                    copied += 1
                elif src.outputs_kept and kind == "text" and key not in rejudge and not row.early_stop:
                    # (an answer cut after its prefix was decided by the old judges only: generated again)
                    rejudge[key] = (it, row.output)
        if copied or rejudge:
            s.add(new_run)
        s.commit()
    return copied, [v for k, v in rejudge.items() if k in wanted]


def _copy_sample(s, audit_id: int, row: Sample, keep_outputs: bool) -> Sample:
    new = Sample(audit_id=audit_id, **{f: getattr(row, f) for f in SAMPLE_FIELDS})
    if not keep_outputs:
        new.output = ""
    s.add(new)
    s.flush()  # gives the copy its id
    assert new.id is not None
    for sc in s.exec(select(JudgeScoreRow).where(JudgeScoreRow.sample_id == row.id)).all():
        s.add(JudgeScoreRow(sample_id=new.id, **{f: getattr(sc, f) for f in SCORE_FIELDS}))
    return new


def _rejudge(runner, policy, p: ProbePlan, probe, todo: list[tuple[ProbeItem, str]], judges: dict) -> int:
    """Judge stored outputs with the policy's judges and store them as this audit's samples."""
    ids = judge_ids(policy, p, probe)
    step = policy.generation.fixed_batch_size()
    done = 0
    for start in range(0, len(todo), step):
        runner.gate()
        batch = todo[start : start + step]
        items, outputs = [it for it, _ in batch], [out for _, out in batch]
        t0 = time.monotonic()
        inputs = [JudgeInput(it.prompt, out, it.category) for it, out in zip(items, outputs)]
        scores = {j: judges[j].score(inputs) for j in ids}
        runner.store_batch(policy, p.id, probe.expect, ids, items, outputs, scores, 0.0, time.monotonic() - t0)
        done += len(batch)
    return done


def _copy_attack(runner, policy, run: ProbeRun, source: ProbeRun) -> None:
    from auditd.runner.verdicts import rethreshold_attack

    audit_id, probe_id = runner.audit_id, run.probe_id
    with session(runner.ctx.engine) as s:
        for pt in s.exec(
            select(AttackPoint).where(AttackPoint.audit_id == source.audit_id, AttackPoint.probe_id == probe_id)
        ).all():
            data = pt.model_dump(exclude={"id", "audit_id", "created_at"})
            s.add(AttackPoint(audit_id=audit_id, **data))
        for row in s.exec(select(Sample).where(Sample.audit_id == source.audit_id, Sample.probe_id == probe_id)).all():
            _copy_sample(s, audit_id, row, policy.keep_outputs)
        summary = dict(source.summary or {})
        summary.pop("adapter_kept", None)  # the adapter (if kept) belongs to the source audit's work dir
        run.summary = rethreshold_attack(s, audit_id, probe_id, summary, policy)
        run.summary["reused_from_audit"] = source.audit_id
        run.status, run.n_items, run.finished_at = "done", source.n_items, utcnow()
        s.add(run)
        s.commit()


def _backfill(engine, checkpoint_id: str) -> None:
    """Give the checkpoint's probe runs that the runner created their digests, from their audit's
    record (written when the audit started), so later audits can match their samples."""
    with session(engine) as s:
        rows = s.exec(
            select(ProbeRun, AuditRun)
            .join(AuditRun, col(AuditRun.id) == col(ProbeRun.audit_id))
            .where(col(AuditRun.checkpoint_id) == checkpoint_id, col(ProbeRun.gen_digest).is_(None))
        ).all()
        for run, audit in rows:
            d = ((audit.reuse or {}).get("digests") or {}).get(run.probe_id)
            if d:
                run.gen_digest, run.judge_digest, run.outputs_kept = d["gen"], d["judge"], d["kept"]
                s.add(run)
        s.commit()


def discard_probe_run(s, audit_id: int, probe_id: str) -> None:
    """Delete one probe run of an audit with everything stored under it (the caller commits)."""
    ids = select(Sample.id).where(Sample.audit_id == audit_id, Sample.probe_id == probe_id)
    s.exec(delete(JudgeScoreRow).where(col(JudgeScoreRow.sample_id).in_(ids)))
    s.exec(delete(Sample).where(col(Sample.audit_id) == audit_id, col(Sample.probe_id) == probe_id))
    for table in (AttackPoint, CategoryResult, JudgeErrorCount, ProbeRun):
        s.exec(delete(table).where(col(table.audit_id) == audit_id, col(table.probe_id) == probe_id))
    s.flush()
