"""Run one audit to a stored verdict, resumably.

Samples are committed batch by batch under a unique key (audit, probe, item, variant): an audit
interrupted by a crash or a shutdown resumes where it stopped, and a re-run cannot duplicate.
Every failure path ends in status "error" with a one-line message and an "error" verdict.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from auditd import plugins
from auditd.backends.base import Closable, GenerationParams, local_checkpoint_of
from auditd.judges.combine import judge_sample, provenance
from auditd.logs import one_line
from auditd.policy.baseline import evaluate
from auditd.policy.cache import PolicyCache
from auditd.policy.model import Policy, ProbePlan
from auditd.probe import Probe
from auditd.probe.build import build_probe
from auditd.runner.errors import AuditFailed, Cancelled, Interrupted
from auditd.runner.items import select_items
from auditd.runner.lazy import LazyBackend
from auditd.runner.packing import run_packed
from auditd.runner.reuse import prepare_audit
from auditd.runner.session import OpenedRun
from auditd.runner.verdicts import redecide_dependents, write_back
from auditd.settings import Settings
from auditd.stage import current as current_stage
from auditd.stage import stage, stage_of
from auditd.store.db import session
from auditd.store.errors import retry_storage
from auditd.store.models import AuditRun, CheckpointRow, JudgeScoreRow, ProbeRun, Sample, Verdict, utcnow
from auditd.store.results import aggregate

if TYPE_CHECKING:
    from auditd.runner.content import BoundContent

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (probe id, done, total)


@dataclass
class AuditContext:
    engine: Engine
    settings: Settings
    stop: threading.Event = field(default_factory=threading.Event)
    progress: Progress | None = None
    on_verdict: Callable[[CheckpointRow, Verdict], None] | None = None  # registry write-back
    policies: PolicyCache = None  # type: ignore[assignment]  # set from settings when not given
    memory_limit: int | None = None  # bytes; set in an audit child with RLIMIT_AS, named in memory errors
    notice: Callable[[str], None] | None = None  # one-line news for the user (e.g. stored work reused)

    def __post_init__(self):
        if self.policies is None:
            self.policies = PolicyCache(self.settings.policies_dir)


def gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def is_memory_error(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's allocator failing under RLIMIT_AS (a RuntimeError)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "cannot allocate memory" in text


def timeout_message(timeout_s: float, where: str) -> str:
    return f"timeout after {timeout_s:g} s in {where} (the audit timed out: budget.audit_timeout_s)"


def memory_message(limit: int | None, where: str) -> str:
    return f"killed: memory limit {gib(limit)} exceeded in {where}" if limit else f"out of memory in {where}"


class AuditRunner:
    def __init__(self, ctx: AuditContext, audit_id: int):
        self.ctx = ctx
        self.audit_id = audit_id
        self.deadline = float("inf")
        self.content: BoundContent | None = None  # the snapshot the backend loads (auditd.runner.content)
        self.timeout_s = float("inf")

    # -- the ProbeSession interface (auditd.runner.session) ---------------------------------
    @property
    def engine(self) -> Engine:
        return self.ctx.engine

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    # -- the whole audit ------------------------------------------------------------------
    def run(self) -> str | None:
        """Returns the outcome, or None when interrupted (the audit stays queued)."""
        with session(self.ctx.engine) as s:
            audit = s.get_one(AuditRun, self.audit_id)
            checkpoint = s.get_one(CheckpointRow, audit.checkpoint_id)  # a foreign key: it exists
        started = time.monotonic()
        backend, judges = None, {}
        try:
            policy = self.ctx.policies.get(audit.policy)
            self.timeout_s = policy.budget.audit_timeout_s
            self.deadline = started + self.timeout_s
            plan = policy.plan(checkpoint.kind)
            if not plan:
                raise AuditFailed(f"policy {policy.name!r} has no probes for {checkpoint.kind} checkpoints")
            # Built on first use: an audit that reuses every stored sample never loads the model.
            backend = LazyBackend(lambda: self._backend(policy, checkpoint, audit.device))
            with stage("load"):
                judges = self._judges(policy, plan)
            self.reuse = prepare_audit(self, policy, checkpoint, plan, judges)  # seed with compatible stored work
            if self.ctx.notice and (msg := self.reuse.message()):
                self.ctx.notice(msg)
            with stage("static probes"):  # every static text item in packed batches (auditd.runner.packing)
                run_packed(self, policy, plan, backend, judges)
            summaries = {}
            for p in plan:
                with stage(f"probe {p.id}"):
                    summaries[p.id] = self._run_probe(policy, p, backend, judges)
            with stage("verify content"):
                if self.content is not None:
                    self.content.verify_after()  # changed during the audit: error, never a pass
                elif self._loads_local_files(policy, checkpoint):
                    # Every sample was reused (the model never loaded): the verdict is still written
                    # beside these files, so they must still be the bytes those samples came from.
                    from auditd.runner.content import verify_in_place

                    verify_in_place(checkpoint, self.ctx.settings)
            return self._finish(policy, checkpoint, summaries, started)
        except Interrupted:
            retry_storage(
                lambda: requeue(self.ctx.engine, self.audit_id),
                f"audit {self.audit_id}: requeue",
                deadline=time.monotonic() + 30,
            )
            log.info("audit %s interrupted; it will resume on the next start", self.audit_id)
            return None
        except Exception as exc:  # fail closed: whatever went wrong, the verdict is error
            where = stage_of(exc)
            status = "cancelled" if isinstance(exc, Cancelled) else "error"
            message = memory_message(self.ctx.memory_limit, where) if is_memory_error(exc) else one_line(exc)
            log.warning("audit %s ended in %s: %s", self.audit_id, status, message)
            self._store_failure(checkpoint, status, message, started)
            return "error"
        finally:
            if self.content is not None:
                self.content.close()
            # Judge models (rubric, guard) and the audited model are freed before the next audit.
            for closable in [backend, *judges.values()]:
                try:
                    if isinstance(closable, Closable):
                        closable.close()
                except Exception:  # closing must not mask the audit's own outcome
                    log.exception("closing %s failed", type(closable).__name__)

    @staticmethod
    def _loads_local_files(policy: Policy, checkpoint: CheckpointRow) -> bool:
        spec = policy.t2i_backend if checkpoint.kind == "t2i" else policy.backend
        return local_checkpoint_of(plugins.resolve(spec.id)) is not None

    def _backend(self, policy: Policy, checkpoint: CheckpointRow, device: str):
        spec = policy.t2i_backend if checkpoint.kind == "t2i" else policy.backend
        options = dict(spec.options)
        if (checkpoint.meta or {}).get("refused"):  # a link out of the registry: never audited, any backend
            raise AuditFailed(str(checkpoint.meta["refused"]))
        local = local_checkpoint_of(plugins.resolve(spec.id))  # backends that load the checkpoint's own files
        if local is not None:
            from auditd.backends.limits import check_model_memory
            from auditd.backends.loading import check_loadable
            from auditd.runner.content import bind_content

            settings = self.ctx.settings
            # The bytes loaded are the bytes hashed: a private snapshot, checked against the digest.
            self.content = bind_content(checkpoint, settings, self.audit_id)
            path = str(self.content.path)
            try:
                check_loadable(path, allow_pickle=policy.allow_pickle)
                check_model_memory(
                    Path(path),
                    str(options.get("dtype", "auto")),
                    settings.model_memory_limit,
                    settings.max_config_bytes,
                    options.get("gguf_file"),
                )
                options.setdefault("model", path)
                filled = {
                    "device": settings.device if device == "any" else device,
                    "allow_pickle": policy.allow_pickle,
                    "max_prompt_chars": settings.max_prompt_chars,
                }
                for name in sorted(local.options & filled.keys()):
                    options.setdefault(name, filled[name])
                return plugins.create(spec.id, **options)
            except Exception as exc:  # name the registry path, not the private snapshot
                raise AuditFailed(self.content.unmask(one_line(exc))) from exc
        return plugins.create(spec.id, **options)

    def _judges(self, policy: Policy, plan: list[ProbePlan]) -> dict:
        needed: list[str] = []
        for p in plan:
            for j in policy.judges_for(p, build_probe(p)):
                if j not in needed:
                    needed.append(j)
        return {j: plugins.create(f"judge:{j}", **policy.judge_options.get(j, {})) for j in needed}

    # -- one probe ------------------------------------------------------------------------
    def _storing(self, fn, what: str):
        """One transaction, retried while the database is locked, full or unreachable (until the
        audit's deadline): a passing storage failure is not the checkpoint's fault."""
        return retry_storage(
            fn, f"audit {self.audit_id}: {what}", deadline=self.deadline, should_stop=self.ctx.stop.is_set
        )

    def _run_probe(self, policy: Policy, plan: ProbePlan, backend, judges: dict) -> dict:
        probe = build_probe(plan)
        if probe.attack:  # fine-tuning attacks (text and diffusion GRPO): their own loop, same store
            from auditd.attacks.run import run_attack_probe

            return run_attack_probe(self, policy, plan, probe, backend.get, judges)
        if probe.modality == "t2i":  # images instead of text: generation and storage differ
            from auditd.runner.t2i import run_image_probe

            return run_image_probe(self, policy, plan, probe, backend.get, judges)
        judge_ids = policy.judges_for(plan, probe)
        items = select_items(probe, plan)
        opened = self.open_probe_run(plan.id, len(items))
        if opened.finished:
            return cast(dict[str, Any], opened.summary)  # a done run always has its summary (close_probe)
        todo = [it for it in items if (it.index, it.variant) not in opened.stored]
        params = GenerationParams(
            max_new_tokens=policy.generation.max_new_tokens,
            temperature=policy.generation.temperature,
            seed=policy.generation.seed,
            batch_size=policy.generation.fixed_batch_size(),
        )
        n_done = len(items) - len(todo)
        self.progress(plan.id, n_done, len(items))
        step = params.batch_size
        for start in range(0, len(todo), step):
            self.gate()
            batch = todo[start : start + step]
            chats = [
                ([{"role": "system", "content": it.system}] if it.system else [])
                + [{"role": "user", "content": it.prompt}]
                for it in batch
            ]
            t0 = time.monotonic()
            with stage("generate"):
                outputs = backend.generate(chats, params)
            t1 = time.monotonic()
            if len(outputs) != len(batch):
                raise AuditFailed(f"backend returned {len(outputs)} outputs for {len(batch)} prompts")
            inputs = [probe.judge_input(it, out) for it, out in zip(batch, outputs)]
            with stage("judge"):
                scores = {j: judges[j].score(inputs) for j in judge_ids}
            t2 = time.monotonic()
            with stage("store"):
                self.store_batch(policy, plan.id, probe.expect, judge_ids, batch, outputs, scores, t1 - t0, t2 - t1)
            n_done += len(batch)
            self.progress(plan.id, n_done, len(items))
        return self.close_probe(probe, plan.id)

    def open_probe_run(self, probe_id: str, n_items: int) -> OpenedRun:
        def find_or_create() -> OpenedRun:
            with session(self.ctx.engine) as s:
                run = s.exec(
                    select(ProbeRun).where(ProbeRun.audit_id == self.audit_id, ProbeRun.probe_id == probe_id)
                ).first()
                if run is not None and run.status == "done":
                    return OpenedRun(finished=True, summary=run.summary)
                if run is None:
                    s.add(ProbeRun(audit_id=self.audit_id, probe_id=probe_id, n_items=n_items))
                    s.commit()
                return OpenedRun(finished=False, stored=frozenset(self._stored_keys(s, probe_id)))

        return self._storing(find_or_create, f"probe {probe_id}")

    def _stored_keys(self, s, probe_id: str) -> set[tuple[int, str]]:
        return set(
            s.exec(
                select(Sample.item_index, Sample.variant).where(
                    Sample.audit_id == self.audit_id, Sample.probe_id == probe_id
                )
            ).all()
        )

    def store_batch(
        self,
        policy,
        probe_id,
        expect,
        judge_ids,
        batch,
        outputs,
        scores,
        gen_s,
        judge_s,
        extra: list[dict] | None = None,
    ) -> None:
        """`extra`: per sample, further Sample columns (early_stop, new_tokens from the packer)."""

        def write() -> None:
            with session(self.ctx.engine) as s:
                # A retried commit may have landed before its connection dropped: skip what is stored.
                stored = self._stored_keys(s, probe_id)
                for i, (it, out) in enumerate(zip(batch, outputs)):
                    if (it.index, it.variant) in stored:
                        continue
                    item_scores = [scores[j][i] for j in judge_ids]
                    j = judge_sample(it.expect or expect, item_scores)
                    sample = Sample(
                        audit_id=self.audit_id,
                        probe_id=probe_id,
                        item_index=it.index,
                        variant=it.variant,
                        category=it.category,
                        prompt=it.prompt,
                        output=out if policy.keep_outputs else "",
                        harmful=j.harmful,
                        refused=j.refused,
                        score=j.score,
                        judge_error=j.judge_error,
                        degenerate=j.degenerate,
                        decided_by=j.decided_by,
                        **provenance(item_scores),
                        **(extra[i] if extra else {}),
                    )
                    s.add(sample)
                    s.flush()
                    assert sample.id is not None  # flushed: the database assigned it
                    for sc in item_scores:
                        s.add(
                            JudgeScoreRow(
                                sample_id=sample.id,
                                judge=sc.judge,
                                harmful=sc.harmful,
                                refused=sc.refused,
                                score=sc.score,
                                raw=sc.raw,
                                error=sc.error,
                                categories=list(sc.categories),
                            )
                        )
                audit = s.get_one(AuditRun, self.audit_id)
                audit.generate_s += gen_s
                audit.judge_s += judge_s
                audit.heartbeat_at = utcnow()
                s.add(audit)
                s.commit()

        self._storing(write, "store a batch")

    def close_probe(self, probe: Probe, probe_id: str) -> dict:
        with session(self.ctx.engine) as s:
            # sqlmodel's select() overloads stop at 4 columns; 5 work at runtime (SQLAlchemy's select)
            rows = s.exec(
                select(Sample.category, Sample.variant, Sample.harmful, Sample.refused, Sample.judge_error).where(  # type: ignore[call-overload]
                    Sample.audit_id == self.audit_id, Sample.probe_id == probe_id
                )
            ).all()
            samples = [dict(category=c, variant=v, harmful=h, refused=r, judge_error=e) for c, v, h, r, e in rows]
            summary = probe.summarize(samples)
            aggregate(s, self.audit_id, probe_id)
            run = s.exec(
                select(ProbeRun).where(ProbeRun.audit_id == self.audit_id, ProbeRun.probe_id == probe_id)
            ).one()
            run.status, run.summary, run.finished_at = "done", summary, utcnow()
            s.add(run)
            s.commit()
        return summary

    # -- gates and endings ------------------------------------------------------------------
    def gate(self) -> None:
        if self.ctx.stop.is_set():
            raise Interrupted()
        if time.monotonic() > self.deadline:
            raise AuditFailed(timeout_message(self.timeout_s, current_stage()))

        def cancel_requested() -> bool:
            with session(self.ctx.engine) as s:
                return s.get_one(AuditRun, self.audit_id).cancel_requested

        if self._storing(cancel_requested, "check for a cancel request"):
            raise Cancelled("audit cancelled by request")
        if self.ctx.stop.is_set():  # a stop requested while the database was away
            raise Interrupted()

    def progress(self, probe_id: str, done: int, total: int) -> None:
        if self.ctx.progress:
            self.ctx.progress(probe_id, done, total)

    def _finish(self, policy: Policy, checkpoint: CheckpointRow, summaries: dict, started: float) -> str:
        def decide():
            with session(self.ctx.engine) as s:
                # Against the parent or pinned baseline; also stores per-category drift for /metrics.
                decision = evaluate(s, policy, self.audit_id, checkpoint, summaries)
                verdict = write_verdict(
                    s,
                    self.audit_id,
                    policy.name,
                    decision.outcome,
                    decision.reasons,
                    "done",
                    None,
                    time.monotonic() - started,
                )
                return decision, verdict

        with stage("verdict"):
            decision, verdict = self._storing(decide, "store the verdict")
        if verdict is None:  # ended meanwhile (the supervisor's deadline): that ending stands
            return "error"
        with stage("write-back"):
            write_back(self.ctx, checkpoint, verdict)
            redecide_dependents(self.ctx, checkpoint.id)  # children decided before this baseline finished
        return decision.outcome

    def _store_failure(self, checkpoint: CheckpointRow, status: str, message: str, started: float) -> None:
        elapsed = time.monotonic() - started
        verdict = retry_storage(
            lambda: fail_audit(self.ctx.engine, self.audit_id, status, message, elapsed),
            f"audit {self.audit_id}: store the error",
            deadline=time.monotonic() + 60,
        )
        if verdict is not None:
            write_back(self.ctx, checkpoint, verdict)
            redecide_dependents(self.ctx, checkpoint.id)  # children waiting on this baseline: no longer pending


def run_audit(ctx: AuditContext, audit_id: int) -> str | None:
    return AuditRunner(ctx, audit_id).run()


# -- endings shared by the runner, its supervisor (process executor) and the queue (give-ups) ---------
def write_verdict(
    s,
    audit_id: int,
    policy_name: str,
    outcome: str,
    reasons: list,
    status: str,
    error: str | None,
    elapsed_s: float = 0.0,
    from_status: tuple[str, ...] = ("running",),
) -> Verdict | None:
    """End the audit with its one verdict, in one transaction: a compare-and-set on the audit's
    status, so of two enders (the child finishing, its supervisor's deadline) exactly one wins.
    None (and nothing written) when the audit is no longer in `from_status`."""
    audit = s.get(AuditRun, audit_id)
    res = s.exec(
        update(AuditRun)
        .where(col(AuditRun.id) == audit_id, col(AuditRun.status).in_(from_status))
        .values(
            status=status,
            outcome=outcome,
            error=error,
            finished_at=utcnow(),
            duration_s=(audit.duration_s or 0.0) + elapsed_s,
        )
    )
    if res.rowcount != 1:
        s.rollback()
        return None
    s.exec(delete(Verdict).where(col(Verdict.audit_id) == audit_id))
    verdict = Verdict(
        audit_id=audit_id,
        checkpoint_id=audit.checkpoint_id,
        outcome=outcome,
        policy=policy_name,
        reasons=reasons,
        policy_digest=audit.policy_digest,
    )
    s.add(verdict)
    s.commit()
    return verdict


def fail_audit(
    engine: Engine,
    audit_id: int,
    status: str,
    message: str,
    elapsed_s: float = 0.0,
    from_status: tuple[str, ...] = ("running",),
) -> Verdict | None:
    """Store an `error` verdict (status error or cancelled) with a one-line reason; fail closed."""
    with session(engine) as s:
        audit = s.get(AuditRun, audit_id)
        if audit is None:
            return None
        reasons = [{"action": "error", "rule": status, "message": message}]
        return write_verdict(s, audit_id, audit.policy, "error", reasons, status, message, elapsed_s, from_status)


def requeue(engine: Engine, audit_id: int, worker: str | None = None) -> bool:
    """Put a running audit back in the queue (its stored samples are kept: it resumes)."""
    with session(engine) as s:
        q = update(AuditRun).where(col(AuditRun.id) == audit_id, col(AuditRun.status) == "running")
        if worker is not None:
            q = q.where(col(AuditRun.worker) == worker)
        res = s.exec(q.values(status="queued", worker=None))
        s.commit()
        return res.rowcount == 1
