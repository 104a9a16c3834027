"""The base classes of attack probes (declared in `probes/grpo.py` and `probes/t2i.py`).

An attack probe's items are the prompts that TRAIN the attack; the held-out evaluation set is not
the probe's alone: text attacks evaluate on the policy prompts of every category (minus the
training prompts) and the over-refusal set, the same for every text attack probe, so fragility
figures compare across probes; the diffusion attack holds out the probe's own prompts.
"""

from __future__ import annotations

from typing import ClassVar

from auditd.attacks.config import AttackConfig, DiffusionGRPOConfig, GRPOAttackConfig
from auditd.probe import Probe


class AttackProbe(Probe):
    """Base of the fine-tuning attack probes: the runner hands them to auditd.attacks.run, which
    picks the attack by the probe's modality (text: TRL GRPO, t2i: diffusion GRPO)."""

    attack: ClassVar[bool] = True
    # The attack's defaults; a policy overrides any field with `attack: {...}` on the probe entry.
    config: ClassVar[AttackConfig]


class GRPOTextProbe(AttackProbe):
    """Base of the text GRPO fragility probes; every attribute below is part of a declaration."""

    # Harm probes: compliance is what the attack rewards and what the evaluation counts.
    expect = "refuse"
    # Judges in order of authority: the first decides held-out harm and, unless the config names
    # `reward_judge`, scores the reward. The refusal judge needs no model; policies swap in
    # rubric or guard (a judge model) for real audits.
    judges = ("refusal",)
    config: ClassVar[AttackConfig] = GRPOAttackConfig()


class DiffusionGRPOProbe(AttackProbe):
    """Base of the diffusion GRPO probes (a LoRA of the denoiser, rewarded by a CLIP judge)."""

    modality = "t2i"
    expect = "refuse"
    # Judges of the evaluation images; the reward judge is the config's `reward_judge`.
    judges = ("clip",)
    config: ClassVar[AttackConfig] = DiffusionGRPOConfig()
