"""The `images:` section of a policy: how text-to-image checkpoints are sampled and attacked.

Static probes draw `n_per_prompt` images per prompt with the fixed seeds `seed, seed+1, ...`, so
two audits of the same checkpoint see the same noise and differ only by the weights. The `grpo`
block configures the diffusion GRPO probe (`t2i.grpo`); its defaults follow the published
diffusion-GRPO recipes (about 10 steps, eta 1.0, guidance 5, lr 1e-4, clip range 1e-4), and tests
shrink every setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from auditd.categories import T2I_CATEGORIES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiffusionGRPO(_Strict):
    """The diffusion GRPO attack: a LoRA on the denoiser, rewarded by a CLIP judge's unsafe score.

    Names follow the text attack's config (auditd.attacks.config) where the meaning is the same; a
    probe plan's `attack:` mapping overrides these per probe, like for text GRPO probes."""

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
    height: int | None = Field(None, ge=8)  # default: the static probes' resolution
    width: int | None = Field(None, ge=8)
    learning_rate: float = Field(1e-4, ge=0)  # 0 is allowed: the "no attack" control run
    clip_range: float = Field(1e-4, gt=0)  # PPO ratio clip
    scale_rewards: Literal["group", "batch", "none"] = "group"  # advantage scaling (see grpo_diffusion.group_advantages)
    minibatches: int = Field(2, ge=1)  # optimizer steps per GRPO step (timesteps split into chunks)
    max_grad_norm: float = Field(1.0, gt=0)
    lora_rank: int = Field(4, ge=1, le=256)
    lora_alpha: float = Field(4.0, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])  # UNet attention
    reward_judge: str = "clip"  # judge id whose per-category unsafe probability is the reward
    eval_every: int = Field(2, ge=1)  # steps between evaluation points (step 0 and the last always run)
    heldout_per_category: int = Field(2, ge=1)  # held-out prompts per category at each point
    eval_seeds: int = Field(1, ge=1)  # images per evaluation prompt at each point
    break_threshold: float | None = Field(None, gt=0, le=1)  # held-out unsafe rate = broken; default: policy harmful_rate_block
    max_wall_s: float = Field(3600, gt=0)  # training stops here (the final evaluation still runs)
    max_memory_gb: float | None = Field(None, gt=0)  # CUDA peak allocated, or process RSS on the CPU
    seed: int = 0
    keep_adapter: bool = False  # keep the final unaligned LoRA for forensics (0600 file in a 0700 dir)

    @model_validator(mode="after")
    def _known_category(self):
        if self.target_category not in T2I_CATEGORIES:
            raise ValueError(f"target_category must be one of {', '.join(T2I_CATEGORIES)}")
        if (self.height or 8) % 8 or (self.width or 8) % 8:
            raise ValueError("height and width must be multiples of 8")
        return self

    def eval_due(self, step: int) -> bool:
        return step % self.eval_every == 0 or step >= self.steps


class ImageGeneration(_Strict):
    """Sampling settings of the static text-to-image probes."""

    n_per_prompt: int = Field(2, ge=1, le=64)  # images per prompt, seeds seed..seed+n-1
    seed: int = 0
    steps: int = Field(25, ge=1, le=1000)  # denoising steps
    guidance: float = Field(7.5, ge=0.0)  # classifier-free guidance scale
    height: int = Field(512, ge=8, le=4096)
    width: int = Field(512, ge=8, le=4096)
    batch_size: int = Field(4, ge=1, le=256)  # images per pipeline call
    negative_prompt: str | None = None
    grpo: DiffusionGRPO = Field(default_factory=DiffusionGRPO)

    @model_validator(mode="after")
    def _multiple_of_8(self):
        if self.height % 8 or self.width % 8:
            raise ValueError("height and width must be multiples of 8 (the VAE downsamples by 8)")
        return self
