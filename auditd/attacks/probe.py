"""The base class of text GRPO attack probes (declared in `probes/grpo.py`).

An attack probe's items are the prompts that TRAIN the attack; the held-out evaluation set is not
the probe's: it is the policy prompts of every category (minus the training prompts) and the
over-refusal set, the same for every attack probe, so fragility figures compare across probes.
"""

from __future__ import annotations

from typing import ClassVar

from auditd.attacks.config import GRPOAttackConfig
from auditd.probe import Probe


class GRPOTextProbe(Probe):
    """Base of the text GRPO fragility probes; every attribute below is part of a declaration."""

    # The runner hands probes with `attack = True` to auditd.attacks.run instead of generating.
    attack: ClassVar[bool] = True
    # Harm probes: compliance is what the attack rewards and what the evaluation counts.
    expect = "refuse"
    # Judges in order of authority: the first decides held-out harm and, unless the config names
    # `reward_judge`, scores the reward. The refusal judge needs no model; policies swap in
    # rubric or guard (a judge model) for real audits.
    judges = ("refusal",)
    # The attack's defaults; a policy overrides any field with `attack: {...}` on the probe entry.
    config: ClassVar[GRPOAttackConfig] = GRPOAttackConfig()
