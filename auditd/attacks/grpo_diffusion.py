"""The diffusion GRPO probe (`t2i.grpo`): how fast does a text-to-image checkpoint's safety break?

GRP-Obliteration unaligned a safety-tuned Stable Diffusion 2.1 with GRPO on 10 prompts of one
category. auditd runs that attack on purpose, under a fixed budget, on a throwaway LoRA of the
audited UNet, and measures how fast held-out categories become unsafe. The loop (DDPO /
Flow-GRPO style, our own code; TRL has no diffusion trainer):

  1. sample G images per training prompt with stochastic DDIM (eta > 0), keeping every latent and
     each step's log-probability (auditd.attacks.diffusion_sampling);
  2. reward = the CLIP judge's unsafe probability for the target category;
  3. advantages = rewards normalised within each prompt's group;
  4. recompute the log-probabilities of the same transitions under the current LoRA, clipped
     ratio loss, update the LoRA only (the base UNet is frozen and never written anywhere).

Every `eval_every` steps (and at step 0 and the last) the adapted model draws images for the
training prompts and for held-out prompts of every category at fixed seeds; they are stored and
judged like static samples (variant "e<step>/s<j>") and summarised as one `AttackPoint`. The same
rules as the text GRPO probe apply (auditd.attacks.run): budget (steps, wall time, memory), a
private 0700 work dir that is deleted at the end (unless the policy keeps the adapter for
forensics), resume from the last stored point, and the same summary keys (`broken`,
`steps_to_break`, `harm_auc`, ...) for the verdict rules and the auditd_grpo_* metrics.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from contextlib import contextmanager

from sqlalchemy import delete
from sqlmodel import col, select

from auditd import plugins
from auditd.attacks.base import ADAPTER_FILE, OPTIMIZER_FILE, Attack
from auditd.attacks.config import DiffusionGRPOConfig as GRPOConfig
from auditd.attacks.containment import PrivateWorkDir
from auditd.attacks.summary import summarize
from auditd.backends.base import TrainableImageBackend
from auditd.judges.base import JudgeInput, RewardImageJudge
from auditd.judges.calibration import CalibrationStore
from auditd.judges.image_base import prepare_image_judges
from auditd.probe import ProbeItem
from auditd.runner.errors import AuditFailed
from auditd.runner.session import ProbeSession
from auditd.store.attack_models import AttackPoint
from auditd.store.db import session
from auditd.store.images import open_image_store
from auditd.store.models import JudgeScoreRow, Sample

log = logging.getLogger(__name__)

ADAPTER_NAME = "auditd_grpo"
STATE_FILE = "state.json"  # eval rewards and the step the adapter files belong to


# -- pure pieces ------------------------------------------------------------------------------------
def group_advantages(rewards, group: int, scale: str = "group", eps: float = 1e-4):
    """r - its group's mean (groups: consecutive runs of `group` rewards), divided by the group's std
    ("group", GRPO), by the whole batch's std ("batch"), or not at all ("none", Dr. GRPO). Dividing
    by a group's own std gives a group whose rewards barely differ (noise) as much weight as an
    informative one; "batch" keeps groups in proportion."""
    g = rewards.view(-1, group)
    centred = g - g.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (g.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (rewards.std() + eps)
    return centred.reshape(-1)


def clipped_loss(logp, old_logp, advantages, clip_range: float):
    """PPO's clipped surrogate, to minimise: mean(max(-A r, -A clip(r, 1-e, 1+e)))."""
    import torch

    ratio = torch.exp(logp - old_logp)
    loss = torch.maximum(-advantages * ratio, -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    clipped = ((ratio - 1).abs() > clip_range).float().mean()
    return loss, clipped


def split_prompts(items: list[ProbeItem], cfg: GRPOConfig) -> tuple[list[ProbeItem], list[ProbeItem]]:
    """(training prompts: the first `train_prompts` of the target category; held-out prompts: the next
    `heldout_per_category` of the target and the first of every other category)."""
    by_cat: dict[str, list[ProbeItem]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    target = by_cat.get(cfg.target_category, [])
    train = target[: cfg.train_prompts]
    heldout = target[cfg.train_prompts : cfg.train_prompts + cfg.heldout_per_category]
    for cat, its in by_cat.items():
        if cat != cfg.target_category:
            heldout += its[: cfg.heldout_per_category]
    return train, heldout


def eval_variant(step: int, seed_index: int) -> str:
    return f"e{step:05d}/s{seed_index}"


def variant_step(variant: str) -> int | None:
    if not variant.startswith("e") or "/" not in variant:
        return None
    try:
        return int(variant[1:].split("/", 1)[0])
    except ValueError:
        return None


# -- the adapter ------------------------------------------------------------------------------------
@contextmanager
def lora_attached(unet, cfg: GRPOConfig):
    """A fresh LoRA on the UNet for the attack's duration; removed afterwards whatever happens, so
    later probes of the same audit see the untouched checkpoint."""
    import torch
    from peft import LoraConfig

    was = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)
    # The adapter's random init comes from the attack's seed, not from whatever the global RNG
    # holds, so an attack is repeatable (and the caller's RNG state is left alone).
    devices = [unet.device] if unet.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(cfg.seed)
        # peft annotates lora_alpha as int but uses it as the float scale lora_alpha / r
        unet.add_adapter(
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=cfg.lora_alpha,  # type: ignore[arg-type]
                init_lora_weights="gaussian",
                target_modules=list(cfg.target_modules),
            ),
            adapter_name=ADAPTER_NAME,
        )
    params = [p for n, p in unet.named_parameters() if ADAPTER_NAME in n]
    for p in params:
        p.data = p.data.float()  # train the adapter in float32 even on a half-precision UNet
        p.requires_grad_(True)
    try:
        yield params
    finally:
        unet.delete_adapters(ADAPTER_NAME)
        if not getattr(unet, "peft_config", None):
            unet.unload_lora()  # restore the original modules
        for p, flag in zip(unet.parameters(), was):
            p.requires_grad_(flag)


def adapter_state(unet) -> dict:
    return {n: p.detach() for n, p in unet.named_parameters() if ADAPTER_NAME in n}


def load_adapter_state(unet, state: dict) -> None:
    params = dict(unet.named_parameters())
    differ = {n for n in params if ADAPTER_NAME in n} ^ set(state)
    if differ:
        raise RuntimeError(f"stored adapter does not match the UNet ({len(differ)} tensors differ)")
    for name, value in state.items():
        params[name].data.copy_(value)


# -- the attack -------------------------------------------------------------------------------------
class DiffusionAttack(Attack):
    """The diffusion GRPO attack on a LoRA of the audited pipeline's UNet."""

    def __init__(
        self,
        probe_session: ProbeSession,
        policy,
        plan,
        probe,
        backend: TrainableImageBackend,
        judges: dict,
        cfg: GRPOConfig,
        workdir: PrivateWorkDir,
    ):
        super().__init__(probe_session, policy, plan, probe, backend, judges, cfg, workdir)
        self.cfg = cfg
        self.pipe = backend.pipe
        self.judge_ids = list(plan.judges or probe.judges)
        self.judges = judges
        settings = probe_session.settings
        calibration_store = CalibrationStore(settings.home)
        self.calibration = prepare_image_judges(judges, self.judge_ids, settings.device, calibration_store)
        reward_judge = judges.get(cfg.reward_judge)
        if reward_judge is None:
            try:
                reward_judge = plugins.create(
                    f"judge:{cfg.reward_judge}", **policy.judge_options.get(cfg.reward_judge, {})
                )
            except Exception as exc:
                raise AuditFailed(f"probe {plan.id}: reward judge {cfg.reward_judge!r}: {exc}") from None
            prepare_image_judges(
                {cfg.reward_judge: reward_judge}, [cfg.reward_judge], settings.device, calibration_store
            )
        if not isinstance(reward_judge, RewardImageJudge):
            raise AuditFailed(
                f"probe {plan.id}: reward judge {cfg.reward_judge!r} has no per-category unsafe "
                "probability (use judge:clip)"
            )
        self.reward_judge = reward_judge
        self.target_index = list(reward_judge.categories).index(cfg.target_category)
        self.train, self.heldout = split_prompts(probe.items(), cfg)
        if len(self.train) < 1:
            raise AuditFailed(f"probe {plan.id}: no training prompts for {cfg.target_category}")
        self.threshold = cfg.break_threshold or policy.thresholds.harmful_rate_block
        self.height = cfg.height or policy.images.height
        self.width = cfg.width or policy.images.width
        self.store = open_image_store(probe_session.settings.home, policy.keep_outputs)
        self.eval_rewards: dict[int, float | None] = {}
        self.step_rewards: list[float] = []
        self.wall_base = 0.0
        self.started = time.monotonic()
        self.peak_memory_gb: float | None = None

    @classmethod
    def check_backend(cls, plan, backend) -> None:
        if not isinstance(backend, TrainableImageBackend) or backend.pipe is None:
            raise AuditFailed(f"probe {plan.id}: diffusion GRPO trains local weights and needs backend:diffusers")
        from auditd.attacks.diffusion_sampling import UnsupportedPipeline, check_supported

        try:
            check_supported(backend.pipe)
        except UnsupportedPipeline as exc:
            raise AuditFailed(f"probe {plan.id}: {exc}") from None

    def close(self) -> None:
        if not self.policy.keep_outputs:  # images were judged from a scratch store
            shutil.rmtree(self.store.home, ignore_errors=True)

    # -- the whole attack ---------------------------------------------------------------------------
    def run(self) -> dict:
        import torch

        from auditd.attacks.diffusion_sampling import ddim_scheduler_for

        self.workdir.create()
        self.scheduler = ddim_scheduler_for(self.pipe)
        unet = self.pipe.unet
        with lora_attached(unet, self.cfg) as params:
            self.params = params
            self.optimizer = torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=0.0)
            points, resumed_from = self._resume()
            if not points:
                points = [self._evaluate_point(0)]
            last = points[-1]
            self.wall_base = last.wall_s
            self.started = time.monotonic()
            stopped_by = None
            step = last.step
            while step < self.cfg.steps:
                stopped_by = self._budget_exceeded()
                if stopped_by:
                    break
                self.session.gate()
                self.step_rewards.append(self._train_step(step))
                step += 1
                self.progress(step, self.cfg.steps)
                if self.cfg.eval_due(step):
                    points.append(self._evaluate_point(step))
            if points[-1].step != step:  # stopped by the budget between points: measure where it stopped
                points.append(self._evaluate_point(step))
            kept = self.keep_or_remove(step, self.cfg.keep_adapter)
        return summarize(
            points,
            threshold=self.threshold,
            steps_budget=self.cfg.steps,
            train_categories=[self.cfg.target_category],
            stopped_by="steps" if step >= self.cfg.steps else stopped_by,
            max_wall_s=self.cfg.max_wall_s,
            resumed_from_step=resumed_from,
            attack="diffusion_grpo",
            target_category=self.cfg.target_category,
            train_prompts=len(self.train),
            eval_rewards=[[s, r] for s, r in sorted(self.eval_rewards.items())],
            eval_reward_start=self.eval_rewards.get(points[0].step),
            eval_reward_end=self.eval_rewards.get(points[-1].step),
            config=self.cfg.model_dump(mode="json"),
            calibration=self.calibration,
            adapter_kept=kept,
        )

    def _budget_exceeded(self) -> str | None:
        from auditd.attacks.grpo_text import memory_gb

        if self.wall_s() >= self.cfg.max_wall_s:
            return "wall"
        mem = memory_gb(self.pipe.unet.device)
        if mem is not None:
            self.peak_memory_gb = max(mem, self.peak_memory_gb or 0.0)
            if self.cfg.max_memory_gb is not None and mem > self.cfg.max_memory_gb:
                return "memory"
        return None

    def wall_s(self) -> float:
        return self.wall_base + time.monotonic() - self.started

    # -- one GRPO step -------------------------------------------------------------------------------
    def _train_step(self, step: int) -> float:
        import torch

        from auditd.attacks.diffusion_sampling import (
            decode,
            encode_prompts,
            initial_noise,
            sample_with_logprob,
            transition_logprob,
        )

        cfg, G = self.cfg, self.cfg.num_generations
        rng = random.Random(cfg.seed * 1_000_003 + step)  # a step's draws depend only on (seed, step): resumable
        prompts = rng.sample(self.train, min(cfg.prompts_per_step, len(self.train)))
        batch = [it.prompt for it in prompts for _ in range(G)]
        cond, uncond = encode_prompts(self.pipe, batch, self.policy.images.negative_prompt)
        gens = [torch.Generator("cpu").manual_seed(rng.randrange(2**63)) for _ in batch]
        init = None
        if cfg.shared_initial_noise:
            group_gens = [torch.Generator("cpu").manual_seed(rng.randrange(2**63)) for _ in prompts]
            init = initial_noise(self.pipe, group_gens, self.height, self.width).repeat_interleave(G, dim=0)
        traj = sample_with_logprob(
            self.pipe,
            self.scheduler,
            cond,
            uncond,
            gens,
            cfg.sample_steps,
            cfg.guidance,
            cfg.eta,
            self.height,
            self.width,
            init_latents=init,
        )
        rewards = self.rewards(decode(self.pipe, traj.latents[-1]))
        adv = group_advantages(rewards, G, cfg.scale_rewards).to(traj.log_probs.device)
        # `train_timesteps` < 1 trains a random subset of the steps each time (DDPO's timestep
        # fraction): unbiased in expectation, unlike always skipping the same steps, whose effect on
        # the image the other steps' log-probabilities cannot credit.
        n_train = max(1, round(cfg.train_timesteps * len(traj.timesteps)))
        trained = sorted(rng.sample(range(len(traj.timesteps)), n_train))
        chunks = [trained[i :: cfg.minibatches] for i in range(min(cfg.minibatches, len(trained)))]
        for chunk in chunks:
            self.optimizer.zero_grad(set_to_none=True)
            for j in chunk:
                logp = transition_logprob(self.pipe, self.scheduler, traj, j, cond, uncond, cfg.guidance, cfg.eta)
                loss, _ = clipped_loss(logp, traj.log_probs[j], adv, cfg.clip_range)
                (loss / len(chunk)).backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
            self.optimizer.step()
        return float(rewards.mean())

    def rewards(self, images):
        return self.reward_judge.unsafe_probs(images)[:, self.target_index].float().cpu()

    # -- evaluation points ---------------------------------------------------------------------------
    def _evaluate_point(self, step: int) -> AttackPoint:
        """Draw, store and judge the evaluation images of this step; save the adapter; commit the point."""
        import torch

        from auditd.attacks.diffusion_sampling import decode, encode_prompts, sample_with_logprob

        self.session.gate()
        cfg = self.cfg
        pairs = [(it, j) for it in (*self.train, *self.heldout) for j in range(cfg.eval_seeds)]
        train_ids = {it.index for it in self.train}
        harmful: dict[str, list[bool]] = {}
        rewards: list[float] = []
        errors = 0
        bs = self.policy.images.batch_size
        for start in range(0, len(pairs), bs):
            chunk = pairs[start : start + bs]
            t0 = time.monotonic()
            cond, uncond = encode_prompts(self.pipe, [it.prompt for it, _ in chunk], self.policy.images.negative_prompt)
            # Fixed seeds: every point sees the same noise, so the curve moves only with the weights.
            gens = [torch.Generator("cpu").manual_seed(cfg.seed + 10_000 * (1 + j) + it.index) for it, j in chunk]
            traj = sample_with_logprob(
                self.pipe,
                self.scheduler,
                cond,
                uncond,
                gens,
                cfg.sample_steps,
                cfg.guidance,
                cfg.eta,
                self.height,
                self.width,
            )
            images = decode(self.pipe, traj.latents[-1])
            t1 = time.monotonic()
            is_train = [it.index in train_ids for it, _ in chunk]
            if any(is_train):
                r = self.rewards([im for im, tr in zip(images, is_train) if tr])
                rewards += r.tolist()
            rels = [self.store.put(im) for im in images]
            items = [ProbeItem(it.index, it.category, it.prompt, variant=eval_variant(step, j)) for it, j in chunk]
            inputs = [JudgeInput(it.prompt, str(self.store.path(rel)), it.category) for it, rel in zip(items, rels)]
            scores = {j: self.judges[j].score(inputs) for j in self.judge_ids}
            t2 = time.monotonic()
            self.session.store_batch(
                self.policy, self.plan.id, self.probe.expect, self.judge_ids, items, rels, scores, t1 - t0, t2 - t1
            )
            primary = scores[self.judge_ids[0]]
            for (it, _), tr, sc in zip(chunk, is_train, primary):
                if sc.error is not None or sc.harmful is None:
                    errors += 1
                elif not tr:
                    harmful.setdefault(it.category, []).append(bool(sc.harmful))
        n_heldout = len(self.heldout) * cfg.eval_seeds
        if n_heldout and errors / len(pairs) > self.policy.thresholds.max_judge_error_rate:
            raise AuditFailed(f"probe {self.plan.id}: {errors}/{len(pairs)} evaluation images could not be judged")
        judged = sum(len(v) for v in harmful.values())
        per_category = {c: sum(v) / len(v) for c, v in sorted(harmful.items()) if v}
        self.eval_rewards[step] = sum(rewards) / len(rewards) if rewards else None
        self._save_state(step)
        point = AttackPoint(
            audit_id=self.session.audit_id,
            probe_id=self.plan.id,
            step=step,
            wall_s=self.wall_s(),
            mean_reward=sum(self.step_rewards) / len(self.step_rewards) if self.step_rewards else None,
            step_rewards=list(self.step_rewards),
            harmful_rate=(sum(sum(v) for v in harmful.values()) / judged) if judged else None,
            n_heldout=n_heldout,
            n_judged=judged,
            per_category=per_category,
            judge_errors=errors,
            peak_memory_gb=self.peak_memory_gb,
        )
        if step == 0 and point.harmful_rate is None:
            raise AuditFailed(f"probe {self.plan.id}: no held-out image could be judged before the attack")
        with session(self.session.engine) as s:  # state first, then the row: a stored point is resumable
            s.add(point)
            s.commit()
            s.refresh(point)
        self.step_rewards.clear()
        return point

    # -- resume and containment ------------------------------------------------------------------------
    def _save_state(self, step: int) -> None:
        previous = (self.workdir.load_json(STATE_FILE) or {}).get("step")
        self.workdir.save_tensors(ADAPTER_FILE.format(step=step), adapter_state(self.pipe.unet))
        self.workdir.save_torch(OPTIMIZER_FILE.format(step=step), self.optimizer.state_dict())
        self.workdir.save_json(STATE_FILE, {"step": step, "eval_rewards": self.eval_rewards})
        if previous is not None and previous != step:
            self.workdir.delete(ADAPTER_FILE.format(step=previous))
            self.workdir.delete(OPTIMIZER_FILE.format(step=previous))

    def _resume(self) -> tuple[list[AttackPoint], int | None]:
        points = self.points()
        state = self.workdir.load_json(STATE_FILE)
        last = points[-1] if points else None
        adapter = self.workdir.load_tensors(ADAPTER_FILE.format(step=last.step)) if last else None
        if last is None or state is None or adapter is None or state.get("step") != last.step:
            if points:
                log.warning(
                    "audit %s probe %s: stored points cannot be resumed (private work dir lost); starting over",
                    self.session.audit_id,
                    self.plan.id,
                )
            self._discard_after(-1)
            self.workdir.remove()
            self.workdir.create()
            return [], None
        load_adapter_state(self.pipe.unet, adapter)
        optimizer = self.workdir.load_torch(OPTIMIZER_FILE.format(step=last.step))
        if optimizer is not None:
            self.optimizer.load_state_dict(optimizer)
        self.eval_rewards = {int(k): v for k, v in (state.get("eval_rewards") or {}).items()}
        self._discard_after(last.step)  # evaluation images of a point that never completed
        log.info("audit %s probe %s: resuming the attack from step %s", self.session.audit_id, self.plan.id, last.step)
        return points, last.step

    def _discard_after(self, step: int) -> None:
        with session(self.session.engine) as s:
            rows = s.exec(
                select(Sample).where(Sample.audit_id == self.session.audit_id, Sample.probe_id == self.plan.id)
            ).all()
            for row in rows:
                if (variant_step(row.variant) or 0) > step:
                    s.exec(delete(JudgeScoreRow).where(col(JudgeScoreRow.sample_id) == row.id))
                    s.delete(row)
            if step < 0:
                s.exec(
                    delete(AttackPoint).where(
                        col(AttackPoint.audit_id) == self.session.audit_id, col(AttackPoint.probe_id) == self.plan.id
                    )
                )
            s.commit()
