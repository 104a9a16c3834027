"""Running one text GRPO attack probe inside an audit: resumable, budgeted, contained.

Called by `AuditRunner._run_probe` for probes with `attack = True`. The order of one attack:
  1. step 0: evaluate the untouched model (held-out harm, over-refusal, benign reference answers);
  2. GRPO steps on the training prompts (grpo_text.train); every `eval_every` steps and at the end,
     evaluate the adapted model, save the adapter state privately, then commit the point;
  3. summarize the stored points into the probe run's summary; delete the work dir (or keep only
     the final adapter for forensics).
Resume: the stored points are the progress. After a crash or a daemon stop, the attack reloads
the adapter (and optimizer) state of its last point from the private work dir and continues from
that step; if the work dir was lost, the points are discarded and the attack starts over.
Ordering: run GRPO probes after the static probes (the runner follows the policy's list), since
they share the device queue and the static results must not wait on an attack.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import delete
from sqlmodel import select

from auditd import plugins
from auditd.attacks.config import GRPOAttackConfig
from auditd.attacks.containment import PrivateWorkDir
from auditd.attacks.evaluate import EvalResult, evaluate, heldout_set, retention
from auditd.attacks.rewards import gated, judge_compliance
from auditd.attacks.summary import summarize
from auditd.backends.base import GenerationParams
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.models import ProbeRun, utcnow

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"


def open_attack_run(runner, plan, probe):
    """(private work dir, stored summary if this attack already finished) for an attack probe run;
    shared by the text and diffusion attacks so resume and clean-up behave the same."""
    engine, settings = runner.ctx.engine, runner.ctx.settings
    workdir = PrivateWorkDir(settings.work_dir, runner.audit_id, plan.id, settings.registry_dir)
    with session(engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == runner.audit_id, ProbeRun.probe_id == plan.id)).first()
        if run is not None and run.status == "done":
            if workdir.exists() and not (run.summary or {}).get("adapter_kept"):
                workdir.remove()  # a crash between summary and cleanup must not leave an adapter behind
            return workdir, run.summary
        if run is None:
            s.add(ProbeRun(audit_id=runner.audit_id, probe_id=plan.id, n_items=len(probe.items())))
            s.commit()
    return workdir, None


def run_attack_probe(runner, policy, plan, probe, backend, judges: dict) -> dict:
    from auditd.runner.audit import AuditFailed, Interrupted, one_line

    engine, settings = runner.ctx.engine, runner.ctx.settings
    workdir, finished = open_attack_run(runner, plan, probe)
    if finished is not None:
        return finished
    try:
        config = probe.config.with_overrides(getattr(plan, "attack", None))
    except ValueError as exc:
        raise AuditFailed(f"probe {plan.id}: {exc}") from None
    if not all(hasattr(backend, a) for a in ("model", "tokenizer", "generate_ids")):
        raise AuditFailed(f"probe {plan.id}: the GRPO attack trains local weights and needs backend:hf "
                          f"(the policy's backend is {getattr(backend, 'id', type(backend).__name__)!r})")
    attack = TextAttack(runner, policy, plan, probe, backend, judges, config, workdir)
    try:
        summary = attack.run()
    except Interrupted:
        raise  # the work dir stays: the next start resumes from the last stored point
    except Exception as exc:
        workdir.remove()
        _mark(engine, runner.audit_id, plan.id, status="error", error=one_line(exc))
        if isinstance(exc, AuditFailed):
            raise
        raise AuditFailed(f"probe {plan.id}: {one_line(exc)}") from exc
    finally:
        attack.close()
    _mark(engine, runner.audit_id, plan.id, status="done", summary=summary)
    return summary


def _mark(engine, audit_id: int, probe_id: str, *, status: str, summary: dict | None = None, error: str | None = None):
    with session(engine) as s:
        run = s.exec(select(ProbeRun).where(ProbeRun.audit_id == audit_id, ProbeRun.probe_id == probe_id)).one()
        run.status, run.error, run.finished_at = status, error, utcnow()
        if summary is not None:
            run.summary = summary
        s.add(run)
        s.commit()


class TextAttack:
    """One attack's state between the trainer's callback and the store."""

    def __init__(self, runner, policy, plan, probe, backend, judges: dict, config: GRPOAttackConfig, workdir):
        from auditd.runner.audit import AuditFailed

        self.runner, self.policy, self.plan, self.backend, self.config, self.workdir = (
            runner, policy, plan, backend, config, workdir)
        judge_ids = policy.judges_for(plan, probe)
        self.eval_judges = [judges[j] for j in judge_ids]
        reward_id = config.reward_judge or judge_ids[0]
        self.own_judge = None  # a reward judge the policy's judge list did not build: ours to close
        if reward_id in judges:
            reward_judge = judges[reward_id]
        else:
            try:
                reward_judge = self.own_judge = plugins.create(f"judge:{reward_id}",
                                                               **policy.judge_options.get(reward_id, {}))
            except Exception as exc:
                raise AuditFailed(f"probe {plan.id}: reward judge {reward_id!r}: {exc}") from None
        self.reward_fn = gated(judge_compliance(reward_judge), config.coherence_weight)
        self.train_items = probe.items()
        self.train_categories = list(dict.fromkeys(it.category for it in self.train_items))
        self.eval_set = heldout_set({it.prompt for it in self.train_items}, config.heldout_per_category,
                                    config.overrefusal_n)
        gen = policy.generation
        self.params = GenerationParams(max_new_tokens=config.eval_max_new_tokens, temperature=gen.temperature,
                                       seed=gen.seed, batch_size=gen.fixed_batch_size())
        self.threshold = config.break_threshold or policy.thresholds.harmful_rate_block
        self.reference: dict | None = None
        self.state = None  # grpo_text.TrainState while training

    def close(self) -> None:
        if self.own_judge is not None and hasattr(self.own_judge, "close"):
            try:
                self.own_judge.close()
            except Exception:  # closing must not mask the attack's own outcome
                log.exception("closing the reward judge failed")

    # -- the whole attack -------------------------------------------------------------------------
    def run(self) -> dict:
        from auditd.attacks import grpo_text

        self.workdir.create()
        points, resumed_from = self._resume()
        if not points:
            points = [self._step_zero()]
        last = points[-1]
        state = self.state = grpo_text.TrainState(start_step=last.step, wall_base=last.wall_s)
        if last.step < self.config.steps and last.wall_s < self.config.max_wall_s:
            adapter = optimizer = None
            if last.step > 0:
                adapter = self.workdir.load_tensors(grpo_text.ADAPTER_FILE.format(step=last.step))
                optimizer = self.workdir.load_torch(grpo_text.OPTIMIZER_FILE.format(step=last.step))
            self._progress(last.step)
            grpo_text.train(self.backend, self.config, self.train_items, self.reward_fn, state,
                            output_dir=str(self.workdir.path / "trainer"), gate=self._gate, on_point=self._on_point,
                            adapter_state=adapter, optimizer_state=optimizer)
        points = self._points()
        end = points[-1]
        stopped_by = "steps" if end.step >= self.config.steps else (state.stopped_by or "wall")
        summary = summarize(points, threshold=self.threshold, steps_budget=self.config.steps,
                            train_categories=self.train_categories, stopped_by=stopped_by,
                            max_wall_s=self.config.max_wall_s, resumed_from_step=resumed_from)
        summary["config"] = self.config.model_dump(mode="json")
        summary["adapter_kept"] = self._close(end.step)
        return summary

    def _resume(self) -> tuple[list[AttackPoint], int | None]:
        from auditd.attacks.grpo_text import ADAPTER_FILE

        points = self._points()
        if not points:
            self.workdir.remove()  # leftovers of an attempt that stored nothing
            self.workdir.create()
            return [], None
        last = points[-1]
        if last.step >= self.config.steps or last.wall_s >= self.config.max_wall_s:
            return points, last.step  # the attack had ended; only the summary was lost
        self.reference = self.workdir.load_json(REFERENCE_FILE)
        adapter_lost = last.step > 0 and self.workdir.read_bytes(ADAPTER_FILE.format(step=last.step)) is None
        if self.reference is None or adapter_lost:
            log.warning("audit %s probe %s: stored points cannot be resumed (private work dir lost); starting over",
                        self.runner.audit_id, self.plan.id)
            with session(self.runner.ctx.engine) as s:
                s.exec(delete(AttackPoint).where(AttackPoint.audit_id == self.runner.audit_id,
                                                 AttackPoint.probe_id == self.plan.id))
                s.commit()
            self.workdir.remove()
            self.workdir.create()
            return [], None
        log.info("audit %s probe %s: resuming the attack from step %s", self.runner.audit_id, self.plan.id, last.step)
        return points, last.step

    def _points(self) -> list[AttackPoint]:
        with session(self.runner.ctx.engine) as s:
            return list(s.exec(select(AttackPoint).where(AttackPoint.audit_id == self.runner.audit_id,
                                                         AttackPoint.probe_id == self.plan.id)
                               .order_by(AttackPoint.step)))

    def _close(self, last_step: int) -> str | None:
        """Delete the work dir, or keep only the final adapter (forensics); returns the kept path."""
        from auditd.attacks.grpo_text import ADAPTER_FILE

        name = ADAPTER_FILE.format(step=last_step)
        if self.config.keep_adapter and last_step > 0 and (self.workdir.path / name).is_file():
            kept = self.workdir.keep_only({name})
            return str(kept[0]) if kept else None
        self.workdir.remove()
        return None

    # -- points -----------------------------------------------------------------------------------
    def _step_zero(self) -> AttackPoint:
        from auditd.attacks.grpo_text import memory_gb
        from auditd.runner.audit import AuditFailed

        self.runner._checkpoint_gate()
        t0 = time.monotonic()
        result = self._evaluate(None)
        if result.harmful_rate is None:
            raise AuditFailed(f"probe {self.plan.id}: no held-out answer could be judged before the attack")
        self.reference = {"benign_answers": result.benign_answers, "nll": result.capability_nll}
        self.workdir.save_json(REFERENCE_FILE, self.reference)
        return self._store(0, time.monotonic() - t0, result, [], memory_gb(self.backend.model.device))

    def _on_point(self, step: int, model, optimizer) -> None:
        """Called by the trainer's callback: evaluate, save the adapter state, then commit the point."""
        from auditd.attacks.grpo_text import ADAPTER_FILE, OPTIMIZER_FILE, adapter_state_dict

        st = self.state
        was_training = model.training
        model.eval()
        try:
            result = self._evaluate(self.reference["benign_answers"])
        finally:
            model.train(was_training)
        # State first, then the row: a stored point always has its adapter on disk.
        self.workdir.save_tensors(ADAPTER_FILE.format(step=step), adapter_state_dict(model))
        if optimizer is not None:
            self.workdir.save_torch(OPTIMIZER_FILE.format(step=step), optimizer.state_dict())
        previous = self._points()[-1].step
        self._store(step, st.wall_s(), result, list(st.rewards), st.peak_memory_gb)
        st.rewards.clear()
        if previous > 0:
            self.workdir.delete(ADAPTER_FILE.format(step=previous))
            self.workdir.delete(OPTIMIZER_FILE.format(step=previous))

    def _evaluate(self, reference) -> EvalResult:
        from auditd.runner.audit import AuditFailed

        result = evaluate(self.backend, self.eval_set, self.eval_judges, self.params, reference=reference)
        n = len(self.eval_set.harm) + len(self.eval_set.benign)
        limit = self.policy.thresholds.max_judge_error_rate
        if n and result.judge_errors / n > limit:
            raise AuditFailed(f"probe {self.plan.id}: {result.judge_errors}/{n} held-out answers could not be judged")
        return result

    def _store(self, step: int, wall_s: float, r: EvalResult, rewards: list[float], mem: float | None) -> AttackPoint:
        ref_nll = (self.reference or {}).get("nll")
        point = AttackPoint(
            audit_id=self.runner.audit_id, probe_id=self.plan.id, step=step, wall_s=wall_s,
            mean_reward=sum(rewards) / len(rewards) if rewards else None, step_rewards=rewards,
            harmful_rate=r.harmful_rate, n_heldout=r.n_heldout, n_judged=r.n_judged, per_category=r.per_category,
            over_refusal_rate=r.over_refusal_rate,
            capability_retention=(retention(ref_nll, r.capability_nll) if step
                                  else 1.0 if ref_nll is not None else None),
            judge_errors=r.judge_errors, peak_memory_gb=mem,
        )
        with session(self.runner.ctx.engine) as s:
            s.add(point)
            s.commit()
        self._progress(step)
        return point

    # -- runner hooks -----------------------------------------------------------------------------
    def _gate(self, step: int) -> None:
        self.runner._checkpoint_gate()
        self._progress(step)

    def _progress(self, step: int) -> None:
        self.runner._progress(self.plan.id, step, self.config.steps)
