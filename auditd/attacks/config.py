"""The text GRPO attack's settings: one small pydantic class, defaults on the probe, overrides in
the policy (`probes.text[n].attack`). Unknown keys are errors, like everywhere in a policy.

Defaults follow TRL's GRPOConfig where they make sense (group size 8, DAPO loss, beta 0) and the
GRP-Obliteration setup (a single prompt, tens of steps, a judge rewarding compliance); the budget
(steps, wall time, memory) is what bounds an audit, so it is explicit here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class GRPOAttackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

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

    def with_overrides(self, overrides: dict[str, Any] | None) -> "GRPOAttackConfig":
        """A validated copy with a policy's overrides applied; ValueError names the bad key."""
        if not overrides:
            return self
        try:
            return GRPOAttackConfig.model_validate({**self.model_dump(), **overrides})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "attack"
            raise ValueError(f"attack.{where}: {err['msg']}") from None

    def eval_due(self, step: int) -> bool:
        """Whether the model is evaluated after `step`: every `eval_every` steps and at the last."""
        return step % self.eval_every == 0 or step >= self.steps
