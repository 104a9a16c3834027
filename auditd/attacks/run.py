"""Running one text GRPO attack probe inside an audit: resumable, budgeted, contained.

`run_attack_probe` is called by the runner for probes with `attack = True` (auditd.attacks.probe);
it runs the text attack (`TextAttack`, below) or the diffusion one (auditd.attacks.grpo_diffusion).
The order of one text attack:
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import delete
from sqlmodel import col

from auditd import plugins
from auditd.attacks.base import ADAPTER_FILE, OPTIMIZER_FILE, Attack, mark_probe_run, open_attack_run
from auditd.attacks.config import GRPOAttackConfig
from auditd.attacks.containment import PrivateWorkDir
from auditd.attacks.evaluate import EvalResult, evaluate, heldout_set, retention
from auditd.attacks.rewards import gated, judge_compliance
from auditd.attacks.summary import summarize
from auditd.backends.base import Closable, GenerationParams, TrainableBackend, backend_id
from auditd.logs import one_line
from auditd.runner.errors import AuditFailed, Interrupted
from auditd.runner.session import ProbeSession
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session

if TYPE_CHECKING:
    from auditd.attacks.grpo_text import TrainState

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"


def run_attack_probe(
    probe_session: ProbeSession, policy, plan, probe, load_backend: Callable[[], object], judges: dict
) -> dict:
    """Run the attack the probe's modality names (text: TRL GRPO, t2i: diffusion GRPO) to its summary;
    `load_backend` returns the audited model (loaded on first call: a finished attack never loads it)."""
    workdir, opened = open_attack_run(probe_session, plan, probe)
    if opened.finished:
        return cast(dict[str, Any], opened.summary)  # a done run always has its summary (close_probe)
    try:
        config = probe.config.with_overrides(plan.attack)
    except ValueError as exc:
        raise AuditFailed(f"probe {plan.id}: {exc}") from None
    attack_class = attack_for(probe)
    backend = load_backend()
    attack_class.check_backend(plan, backend)
    attack = attack_class(probe_session, policy, plan, probe, backend, judges, config, workdir)
    engine, audit_id = probe_session.engine, probe_session.audit_id
    try:
        summary = attack.run()
    except Interrupted:
        raise  # the work dir stays: the next start resumes from the last stored point
    except Exception as exc:
        workdir.remove()
        mark_probe_run(engine, audit_id, plan.id, status="error", error=one_line(exc))
        if isinstance(exc, AuditFailed):
            raise
        raise AuditFailed(f"probe {plan.id}: {one_line(exc)}") from exc
    finally:
        attack.close()
    mark_probe_run(engine, audit_id, plan.id, status="done", summary=summary)
    return summary


def attack_for(probe) -> type[Attack]:
    if probe.modality == "t2i":
        from auditd.attacks.grpo_diffusion import DiffusionAttack

        return DiffusionAttack
    return TextAttack


class TextAttack(Attack):
    """The text GRPO attack: TRL's GRPOTrainer on a LoRA of the audited causal LM."""

    def __init__(
        self,
        probe_session: ProbeSession,
        policy,
        plan,
        probe,
        backend,
        judges: dict,
        config: GRPOAttackConfig,
        workdir: PrivateWorkDir,
    ):
        super().__init__(probe_session, policy, plan, probe, backend, judges, config, workdir)
        self.backend, self.config = backend, config
        judge_ids = policy.judges_for(plan, probe)
        self.eval_judges = [judges[j] for j in judge_ids]
        reward_id = config.reward_judge or judge_ids[0]
        self.own_judge = None  # a reward judge the policy's judge list did not build: ours to close
        if reward_id in judges:
            reward_judge = judges[reward_id]
        else:
            try:
                reward_judge = self.own_judge = plugins.create(
                    f"judge:{reward_id}", **policy.judge_options.get(reward_id, {})
                )
            except Exception as exc:
                raise AuditFailed(f"probe {plan.id}: reward judge {reward_id!r}: {exc}") from None
        self.reward_fn = gated(judge_compliance(reward_judge), config.coherence_weight)
        self.train_items = probe.items()
        self.train_categories = list(dict.fromkeys(it.category for it in self.train_items))
        self.eval_set = heldout_set(
            {it.prompt for it in self.train_items}, config.heldout_per_category, config.overrefusal_n
        )
        gen = policy.generation
        self.params = GenerationParams(
            max_new_tokens=config.eval_max_new_tokens,
            temperature=gen.temperature,
            seed=gen.seed,
            batch_size=gen.fixed_batch_size(),
        )
        self.threshold = config.break_threshold or policy.thresholds.harmful_rate_block
        self.reference: dict | None = None
        self.state: TrainState | None = None  # while training

    @classmethod
    def check_backend(cls, plan, backend) -> None:
        if not isinstance(backend, TrainableBackend):
            raise AuditFailed(
                f"probe {plan.id}: the GRPO attack trains local weights and needs backend:hf "
                f"(the policy's backend is {backend_id(backend)!r})"
            )

    def close(self) -> None:
        if isinstance(self.own_judge, Closable):
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
            self.progress(last.step, self.config.steps)
            grpo_text.train(
                self.backend,
                self.config,
                self.train_items,
                self.reward_fn,
                state,
                output_dir=str(self.workdir.path / "trainer"),
                gate=self._gate,
                on_point=self._on_point,
                adapter_state=adapter,
                optimizer_state=optimizer,
            )
        points = self.points()
        end = points[-1]
        stopped_by = "steps" if end.step >= self.config.steps else (state.stopped_by or "wall")
        summary = summarize(
            points,
            threshold=self.threshold,
            steps_budget=self.config.steps,
            train_categories=self.train_categories,
            stopped_by=stopped_by,
            max_wall_s=self.config.max_wall_s,
            resumed_from_step=resumed_from,
        )
        summary["config"] = self.config.model_dump(mode="json")
        summary["adapter_kept"] = self.keep_or_remove(end.step, self.config.keep_adapter)
        return summary

    def _resume(self) -> tuple[list[AttackPoint], int | None]:
        points = self.points()
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
            log.warning(
                "audit %s probe %s: stored points cannot be resumed (private work dir lost); starting over",
                self.session.audit_id,
                self.plan.id,
            )
            with session(self.session.engine) as s:
                s.exec(
                    delete(AttackPoint).where(
                        col(AttackPoint.audit_id) == self.session.audit_id, col(AttackPoint.probe_id) == self.plan.id
                    )
                )
                s.commit()
            self.workdir.remove()
            self.workdir.create()
            return [], None
        log.info("audit %s probe %s: resuming the attack from step %s", self.session.audit_id, self.plan.id, last.step)
        return points, last.step

    # -- points -----------------------------------------------------------------------------------
    def _step_zero(self) -> AttackPoint:
        from auditd.attacks.grpo_text import memory_gb

        self.session.gate()
        t0 = time.monotonic()
        result = self._evaluate(None)
        if result.harmful_rate is None:
            raise AuditFailed(f"probe {self.plan.id}: no held-out answer could be judged before the attack")
        self.reference = {"benign_answers": result.benign_answers, "nll": result.capability_nll}
        self.workdir.save_json(REFERENCE_FILE, self.reference)
        return self._store(0, time.monotonic() - t0, result, [], memory_gb(self.backend.model.device))

    def _on_point(self, step: int, model, optimizer) -> None:
        """Called by the trainer's callback: evaluate, save the adapter state, then commit the point."""
        from auditd.attacks.grpo_text import adapter_state_dict

        st = self.state
        assert st is not None and self.reference is not None  # run() set both before training calls back
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
        previous = self.points()[-1].step
        self._store(step, st.wall_s(), result, list(st.rewards), st.peak_memory_gb)
        st.rewards.clear()
        if previous > 0:
            self.workdir.delete(ADAPTER_FILE.format(step=previous))
            self.workdir.delete(OPTIMIZER_FILE.format(step=previous))

    def _evaluate(self, reference) -> EvalResult:
        result = evaluate(self.backend, self.eval_set, self.eval_judges, self.params, reference=reference)
        n = len(self.eval_set.harm) + len(self.eval_set.benign)
        limit = self.policy.thresholds.max_judge_error_rate
        if n and result.judge_errors / n > limit:
            raise AuditFailed(f"probe {self.plan.id}: {result.judge_errors}/{n} held-out answers could not be judged")
        return result

    def _store(self, step: int, wall_s: float, r: EvalResult, rewards: list[float], mem: float | None) -> AttackPoint:
        ref_nll = (self.reference or {}).get("nll")
        point = AttackPoint(
            audit_id=self.session.audit_id,
            probe_id=self.plan.id,
            step=step,
            wall_s=wall_s,
            mean_reward=sum(rewards) / len(rewards) if rewards else None,
            step_rewards=rewards,
            harmful_rate=r.harmful_rate,
            n_heldout=r.n_heldout,
            n_judged=r.n_judged,
            per_category=r.per_category,
            over_refusal_rate=r.over_refusal_rate,
            capability_retention=(
                retention(ref_nll, r.capability_nll) if step else 1.0 if ref_nll is not None else None
            ),
            judge_errors=r.judge_errors,
            peak_memory_gb=mem,
        )
        with session(self.session.engine) as s:
            s.add(point)
            s.commit()
        self.progress(step, self.config.steps)
        return point

    # -- the trainer's hook ---------------------------------------------------------------------------
    def _gate(self, step: int) -> None:
        self.session.gate()
        self.progress(step, self.config.steps)
