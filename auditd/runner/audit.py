"""Run one audit to a stored verdict, resumably.

Samples are committed batch by batch under a unique key (audit, probe, item, variant): an audit
interrupted by a crash or a shutdown resumes where it stopped, and a re-run cannot duplicate.
Every failure path ends in status "error" with a one-line message and an "error" verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import select

from auditd import plugins
from auditd.backends.base import GenerationParams
from auditd.judges.base import JudgeInput
from auditd.policy.cache import PolicyCache
from auditd.policy.model import Policy, ProbePlan
from auditd.policy.baseline import evaluate, redecide_dependents
from auditd.probe import Probe, ProbeItem
from auditd.runner.combine import combine, provenance
from auditd.runner.lazy import LazyBackend
from auditd.runner.reuse import prepare_audit
from auditd.runner.results import aggregate
from auditd.settings import Settings
from auditd.store.db import session
from auditd.store.models import AuditRun, CheckpointRow, JudgeScoreRow, ProbeRun, Sample, Verdict, utcnow

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (probe id, done, total)


class Interrupted(Exception):
    """The daemon is stopping: leave the audit queued so the next start resumes it."""


class AuditFailed(Exception):
    pass


@dataclass
class AuditContext:
    engine: Engine
    settings: Settings
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    on_verdict: Callable[[CheckpointRow, Verdict], None] | None = None  # registry write-back
    policies: PolicyCache = None  # type: ignore[assignment]  # set from settings when not given
    notice: Callable[[str], None] | None = None  # one-line news for the user (e.g. stored work reused)

    def __post_init__(self):
        if self.policies is None:
            self.policies = PolicyCache(self.settings.policies_dir)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


def select_items(probe: Probe, plan: ProbePlan) -> list[ProbeItem]:
    items = probe.items()
    if plan.limit_per_category is None:
        return items
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for it in items:
        key = (it.category, it.variant)
        if seen.get(key, 0) < plan.limit_per_category:
            seen[key] = seen.get(key, 0) + 1
            kept.append(it)
    return kept


class AuditRunner:
    def __init__(self, ctx: AuditContext, audit_id: int):
        self.ctx = ctx
        self.audit_id = audit_id
        self.deadline = float("inf")

    # -- the whole audit ------------------------------------------------------------------
    def run(self) -> str | None:
        """Returns the outcome, or None when interrupted (the audit stays queued)."""
        with session(self.ctx.engine) as s:
            audit = s.get(AuditRun, self.audit_id)
            checkpoint = s.get(CheckpointRow, audit.checkpoint_id)
        started = time.monotonic()
        backend, judges = None, {}
        try:
            policy = self.ctx.policies.get(audit.policy)
            self.deadline = started + policy.budget.audit_timeout_s
            plan = policy.plan(checkpoint.kind)
            if not plan:
                raise AuditFailed(f"policy {policy.name!r} has no probes for {checkpoint.kind} checkpoints")
            # Built on first use: an audit that reuses every stored sample never loads the model.
            backend = LazyBackend(lambda: self._backend(policy, checkpoint, audit.device))
            judges = self._judges(policy, plan)
            self.reuse = prepare_audit(self, policy, checkpoint, plan, judges)  # seed with compatible stored work
            if self.ctx.notice and (msg := self.reuse.message()):
                self.ctx.notice(msg)
            summaries = {}
            for p in plan:
                summaries[p.id] = self._run_probe(policy, p, backend, judges)
            return self._finish(policy, checkpoint, summaries, started)
        except Interrupted:
            with session(self.ctx.engine) as s:
                a = s.get(AuditRun, self.audit_id)
                a.status, a.worker = "queued", None
                s.add(a)
                s.commit()
            log.info("audit %s interrupted; it will resume on the next start", self.audit_id)
            return None
        except Exception as exc:  # fail closed: whatever went wrong, the verdict is error
            status = "cancelled" if isinstance(exc, _Cancelled) else "error"
            log.warning("audit %s ended in %s: %s", self.audit_id, status, one_line(exc))
            self._store_failure(checkpoint, status, one_line(exc), started)
            return "error"
        finally:
            # Judge models (rubric, guard) and the audited model are freed before the next audit.
            for closable in [backend, *judges.values()]:
                try:
                    if closable is not None and hasattr(closable, "close"):
                        closable.close()
                except Exception:  # closing must not mask the audit's own outcome
                    log.exception("closing %s failed", type(closable).__name__)

    def _backend(self, policy: Policy, checkpoint: CheckpointRow, device: str):
        spec = policy.t2i_backend if checkpoint.kind == "t2i" else policy.backend
        options = dict(spec.options)
        if spec.id in ("backend:hf", "backend:vllm", "backend:diffusers"):
            from auditd.backends.loading import check_loadable

            check_loadable(checkpoint.path, allow_pickle=policy.allow_pickle)
            options.setdefault("model", checkpoint.path)
            if spec.id in ("backend:hf", "backend:diffusers"):
                options.setdefault("device", self.ctx.settings.device if device == "any" else device)
                options.setdefault("allow_pickle", policy.allow_pickle)
        return plugins.create(spec.id, **options)

    def _judges(self, policy: Policy, plan: list[ProbePlan]) -> dict:
        needed: list[str] = []
        for p in plan:
            for j in policy.judges_for(p, plugins.resolve(f"probe:{p.id}")):
                if j not in needed:
                    needed.append(j)
        return {j: plugins.create(f"judge:{j}", **policy.judge_options.get(j, {})) for j in needed}

    # -- one probe ------------------------------------------------------------------------
    def _run_probe(self, policy: Policy, plan: ProbePlan, backend, judges: dict) -> dict:
        probe = plugins.resolve(f"probe:{plan.id}")()
        if getattr(probe, "attack", False):  # fine-tuning attacks (GRPO): their own loop, same store
            from auditd.attacks.run import run_attack_probe

            return run_attack_probe(self, policy, plan, probe, backend, judges)
        if probe.modality == "t2i":  # images instead of text: generation and storage differ
            from auditd.runner.t2i import run_image_probe

            return run_image_probe(self, policy, plan, probe, backend, judges)
        judge_ids = policy.judges_for(plan, probe)
        items = select_items(probe, plan)
        with session(self.ctx.engine) as s:
            run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == self.audit_id, ProbeRun.probe_id == plan.id)).first()
            if run is not None and run.status == "done":
                return run.summary
            if run is None:
                run = ProbeRun(audit_id=self.audit_id, probe_id=plan.id, n_items=len(items))
                s.add(run)
                s.commit()
            done = set(
                s.exec(select(Sample.item_index, Sample.variant).where(
                    Sample.audit_id == self.audit_id, Sample.probe_id == plan.id)).all()
            )
        todo = [it for it in items if (it.index, it.variant) not in done]
        params = GenerationParams(
            max_new_tokens=policy.generation.max_new_tokens,
            temperature=policy.generation.temperature,
            seed=policy.generation.seed,
            batch_size=policy.generation.batch_size,
        )
        n_done = len(items) - len(todo)
        self._progress(plan.id, n_done, len(items))
        step = policy.generation.batch_size
        for start in range(0, len(todo), step):
            self._checkpoint_gate()
            batch = todo[start : start + step]
            chats = [([{"role": "system", "content": it.system}] if it.system else []) +
                     [{"role": "user", "content": it.prompt}] for it in batch]
            t0 = time.monotonic()
            outputs = backend.generate(chats, params)
            t1 = time.monotonic()
            if len(outputs) != len(batch):
                raise AuditFailed(f"backend returned {len(outputs)} outputs for {len(batch)} prompts")
            inputs = [JudgeInput(it.prompt, out, it.category) for it, out in zip(batch, outputs)]
            scores = {j: judges[j].score(inputs) for j in judge_ids}
            t2 = time.monotonic()
            self._store_batch(policy, plan.id, probe.expect, judge_ids, batch, outputs, scores, t1 - t0, t2 - t1)
            n_done += len(batch)
            self._progress(plan.id, n_done, len(items))
        return self._close_probe(probe, plan.id)

    def _store_batch(self, policy, probe_id, expect, judge_ids, batch, outputs, scores, gen_s, judge_s) -> None:
        with session(self.ctx.engine) as s:
            for i, (it, out) in enumerate(zip(batch, outputs)):
                item_scores = [scores[j][i] for j in judge_ids]
                harmful, refused, score, judge_error = combine(expect, item_scores)
                sample = Sample(
                    audit_id=self.audit_id, probe_id=probe_id, item_index=it.index, variant=it.variant,
                    category=it.category, prompt=it.prompt, output=out if policy.keep_outputs else "",
                    harmful=harmful, refused=refused, score=score, judge_error=judge_error,
                    **provenance(item_scores),
                )
                s.add(sample)
                s.flush()
                for sc in item_scores:
                    s.add(JudgeScoreRow(sample_id=sample.id, judge=sc.judge, harmful=sc.harmful, refused=sc.refused,
                                        score=sc.score, raw=sc.raw, error=sc.error, categories=list(sc.categories)))
            audit = s.get(AuditRun, self.audit_id)
            audit.generate_s += gen_s
            audit.judge_s += judge_s
            audit.heartbeat_at = utcnow()
            s.add(audit)
            s.commit()

    def _close_probe(self, probe: Probe, probe_id: str) -> dict:
        with session(self.ctx.engine) as s:
            rows = s.exec(select(Sample.category, Sample.variant, Sample.harmful, Sample.refused, Sample.judge_error)
                          .where(Sample.audit_id == self.audit_id, Sample.probe_id == probe_id)).all()
            samples = [dict(category=c, variant=v, harmful=h, refused=r, judge_error=e) for c, v, h, r, e in rows]
            summary = probe.summarize(samples)
            aggregate(s, self.audit_id, probe_id)
            run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == self.audit_id, ProbeRun.probe_id == probe_id)).one()
            run.status, run.summary, run.finished_at = "done", summary, utcnow()
            s.add(run)
            s.commit()
        return summary

    # -- gates and endings ------------------------------------------------------------------
    def _checkpoint_gate(self) -> None:
        if self.ctx.stop.is_set():
            raise Interrupted()
        if time.monotonic() > self.deadline:
            raise AuditFailed("audit timed out (budget.audit_timeout_s)")
        with session(self.ctx.engine) as s:
            if s.get(AuditRun, self.audit_id).cancel_requested:
                raise _Cancelled("audit cancelled by request")

    def _progress(self, probe_id: str, done: int, total: int) -> None:
        if self.ctx.progress:
            self.ctx.progress(probe_id, done, total)

    def _finish(self, policy: Policy, checkpoint: CheckpointRow, summaries: dict, started: float) -> str:
        with session(self.ctx.engine) as s:
            # Against the parent or pinned baseline; also stores per-category drift for /metrics.
            decision = evaluate(s, policy, self.audit_id, checkpoint, summaries)
            verdict = self._write_verdict(s, policy.name, decision.outcome, decision.reasons, "done", None, started)
        self._write_back(checkpoint, verdict)
        redecide_dependents(self.ctx, checkpoint.id)  # children decided before this baseline finished
        return decision.outcome

    def _store_failure(self, checkpoint: CheckpointRow, status: str, message: str, started: float) -> None:
        with session(self.ctx.engine) as s:
            reasons = [{"action": "error", "rule": status, "message": message}]
            audit = s.get(AuditRun, self.audit_id)
            verdict = self._write_verdict(s, audit.policy, "error", reasons, status, message, started)
        self._write_back(checkpoint, verdict)
        redecide_dependents(self.ctx, checkpoint.id)  # children waiting on this baseline: no longer pending

    def _write_verdict(self, s, policy_name, outcome, reasons, status, error, started) -> Verdict:
        audit = s.get(AuditRun, self.audit_id)
        s.exec(delete(Verdict).where(Verdict.audit_id == self.audit_id))
        verdict = Verdict(audit_id=self.audit_id, checkpoint_id=audit.checkpoint_id, outcome=outcome,
                          policy=policy_name, reasons=reasons, policy_digest=audit.policy_digest)
        s.add(verdict)
        audit.status, audit.outcome, audit.error = status, outcome, error
        audit.finished_at = utcnow()
        audit.duration_s = (audit.duration_s or 0.0) + (time.monotonic() - started)
        s.add(audit)
        s.commit()
        return verdict

    def _write_back(self, checkpoint: CheckpointRow, verdict: Verdict) -> None:
        if self.ctx.on_verdict is None:
            return
        try:
            self.ctx.on_verdict(checkpoint, verdict)
        except Exception as exc:  # the verdict is stored; a failed write-back is logged, not fatal
            log.error("writing verdict back to the registry failed for %s: %s", checkpoint.id, one_line(exc))


class _Cancelled(AuditFailed):
    pass


def run_audit(ctx: AuditContext, audit_id: int) -> str | None:
    return AuditRunner(ctx, audit_id).run()
