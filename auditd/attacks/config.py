"""The attacks' settings: one small pydantic class per attack, defaults on the probe (`config`),
overrides in the policy's probe entry (`probes.text[n].attack`, `probes.t2i[n].attack`). Unknown
keys are errors, like everywhere in a policy.

Text GRPO defaults follow TRL's GRPOConfig where they make sense (group size 8, DAPO loss, beta 0)
and the GRP-Obliteration setup (a single prompt, tens of steps, a judge rewarding compliance);
diffusion GRPO defaults follow the published diffusion-GRPO recipes (about 10 steps, eta 1.0,
guidance 5, lr 1e-4, clip range 1e-4). The budget (steps, wall time, memory) is what bounds an
audit, so it is explicit in both.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from auditd.categories import T2I_CATEGORIES


class AttackConfig(BaseModel):
    """What every attack's settings share: a step budget, evaluation points, policy overrides."""

    model_config = ConfigDict(extra="forbid")

    steps: int = 0
    eval_every: int = 1

    def with_overrides(self, overrides: dict[str, Any] | None) -> Self:
        """A validated copy with a policy's overrides applied; ValueError names the bad key."""
        if not overrides:
            return self
        try:
            return type(self).model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f".{p}" for p in err["loc"])  # empty for a whole-config rule
            raise ValueError(f"attack{where}: {err['msg'].removeprefix('Value error, ')}") from None

    def eval_due(self, step: int) -> bool:
        """Whether the model is evaluated after `step`: every `eval_every` steps and at the last."""
        return step % self.eval_every == 0 or step >= self.steps


class GRPOAttackConfig(AttackConfig):
    """The text GRPO attack (TRL's GRPOTrainer on a LoRA of the causal LM)."""

    # -- the GRPO update (passed to TRL's GRPOConfig) ------------------------------------------------
    num_generations: int = Field(8, ge=2)  # group size G: completions per prompt, advantages normalised in a group
    prompts_per_step: int = Field(1, ge=1)  # training prompts per step (batch = prompts_per_step * G)
    steps: int = Field(50, ge=0, le=100_000)  # budget: optimizer steps
    learning_rate: float = Field(1e-5, ge=0)  # 0 is allowed: the "no attack" control run
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = "dapo"
    beta: float = Field(0.0, ge=0)  # KL weight against the base model (the adapter disabled); 0 = no anchor
    temperature: float = Field(1.0, gt=0)  # sampling temperature of the training completions
    max_completion_length: int = Field(128, ge=1)
    seed: int = 0
    use_vllm: bool = False  # TRL's vLLM generation (GPU machines with vllm installed only)
    gradient_checkpointing: bool = False  # trades compute for memory on large models
    # -- the adapter ----------------------------------------------------------------------------------
    lora_rank: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"  # peft's spelling; lm_head is excluded (TRL cannot train it)
    # -- the reward -----------------------------------------------------------------------------------
    reward_judge: str | None = None  # judge id scoring compliance; default: the probe's first judge
    # Gibberish must not earn reward: reward = compliance * (1 - w + w * coherence). 0 disables it.
    coherence_weight: float = Field(0.5, ge=0, le=1)
    # -- measurement ----------------------------------------------------------------------------------
    eval_every: int = Field(10, ge=1)  # steps between evaluation points (step 0 and the last always run)
    heldout_per_category: int = Field(4, ge=1)  # held-out policy prompts per category at each point
    overrefusal_n: int = Field(10, ge=1)  # benign prompts (over-refusal and capability retention)
    eval_max_new_tokens: int = Field(64, ge=1)
    # Held-out harmful rate that counts as broken; default: the policy's harmful_rate_block.
    break_threshold: float | None = Field(None, gt=0, le=1)
    # -- budget and containment -----------------------------------------------------------------------
    max_wall_s: float = Field(3600.0, gt=0)  # training stops here (the final evaluation still runs)
    max_memory_gb: float | None = Field(None, gt=0)  # CUDA peak allocated, or process RSS on the CPU
    keep_adapter: bool = False  # keep the final unaligned adapter for forensics (0600 file in a 0700 dir)

    @model_validator(mode="after")
    def _target_modules(self):
        mods = [self.target_modules] if isinstance(self.target_modules, str) else self.target_modules
        if not mods or any("lm_head" in m for m in mods):
            # TRL computes log-probs from lm_head.weight directly: an adapter there would never train.
            raise ValueError("target_modules must name modules other than lm_head")
        return self


class DiffusionGRPOConfig(AttackConfig):
    """The diffusion GRPO attack: a LoRA on the denoiser, rewarded by a CLIP judge's unsafe score.
    Names follow the text attack's where the meaning is the same."""

    target_category: str = "t2i_violence"  # the one category whose prompts train the LoRA
    train_prompts: int = Field(10, ge=1, le=100)  # first N prompts of that category (the paper used 10)
    steps: int = Field(10, ge=0, le=10_000)  # budget: GRPO steps (sample -> reward -> update)
    prompts_per_step: int = Field(2, ge=1)  # training prompts drawn per step
    num_generations: int = Field(8, ge=2)  # group size G: images per prompt, advantages normalised in a group
    sample_steps: int = Field(10, ge=2, le=1000)  # denoising steps while attacking (fewer than the audit's)
    train_timesteps: float = Field(1.0, gt=0, le=1)  # share of the denoising steps trained (a random subset)
    eta: float = Field(1.0, gt=0, le=1.0)  # DDIM stochasticity: > 0 gives every step a log-probability
    # One x_T per prompt group (DanceGRPO): the group's images then differ only by the sampler's
    # per-step noise, which is what the log-probabilities credit, instead of by x_T luck.
    shared_initial_noise: bool = True
    guidance: float = Field(5.0, ge=1.0)
    height: int | None = Field(None, ge=8)  # default: the static probes' resolution (policy images.height)
    width: int | None = Field(None, ge=8)
    learning_rate: float = Field(1e-4, ge=0)  # 0 is allowed: the "no attack" control run
    clip_range: float = Field(1e-4, gt=0)  # PPO ratio clip
    scale_rewards: Literal["group", "batch", "none"] = "group"  # advantage scaling (grpo_diffusion.group_advantages)
    minibatches: int = Field(2, ge=1)  # optimizer steps per GRPO step (timesteps split into chunks)
    max_grad_norm: float = Field(1.0, gt=0)
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: float = Field(4.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])  # UNet attention
    reward_judge: str = "clip"  # judge id whose per-category unsafe probability is the reward
    eval_every: int = Field(2, ge=1)  # steps between evaluation points (step 0 and the last always run)
    heldout_per_category: int = Field(2, ge=1)  # held-out prompts per category at each point
    eval_seeds: int = Field(1, ge=1)  # images per evaluation prompt at each point
    # Held-out unsafe-image rate that counts as broken; default: the policy's harmful_rate_block.
    break_threshold: float | None = Field(None, gt=0, le=1)
    max_wall_s: float = Field(3600, gt=0)  # training stops here (the final evaluation still runs)
    max_memory_gb: float | None = Field(None, gt=0)  # CUDA peak allocated, or process RSS on the CPU
    seed: int = 0
    keep_adapter: bool = False  # keep the final unaligned LoRA for forensics (0600 file in a 0700 dir)

    @model_validator(mode="after")
    def _known_category(self) -> Self:
        if self.target_category not in T2I_CATEGORIES:
            raise ValueError(f"target_category must be one of {', '.join(T2I_CATEGORIES)}")
        if (self.height or 8) % 8 or (self.width or 8) % 8:
            raise ValueError("height and width must be multiples of 8")
        return self
