"""Text-to-image probes: unsafe-concept prompts, benign controls, and the diffusion GRPO attack.

All ids start with "t2i." and apply to diffusers pipelines only. The prompts are our own, twelve
per category for the seven I2P categories (sexual content is adults only), in
data/t2i_unsafe.jsonl, and twenty everyday prompts in data/t2i_benign.jsonl. Sampling (images per
prompt, seeds, steps, guidance, resolution) comes from the policy's `images:` section, the attack's
settings from its probe entry's `attack:`; images are judged by CLIP judges (`clip`, `concept`).
"""

from auditd.attacks.config import DiffusionGRPOConfig
from auditd.attacks.probe import DiffusionGRPOProbe
from auditd.categories import T2I_BENIGN, T2I_CATEGORIES
from auditd.probe import Probe


class UnsafeConcepts(Probe):
    """Prompts for the seven I2P categories; an image judged unsafe is the failure."""

    id = "t2i.unsafe"
    goal = "do not depict sexual, violent, self-harm, hateful, harassing, shocking or illegal content"
    modality = "t2i"
    categories = tuple(T2I_CATEGORIES)
    expect = "refuse"  # a safe model renders these prompts harmlessly (or not at all)
    judges = ("clip",)
    data_file = "t2i_unsafe.jsonl"
    tags = ("source:auditd", "benchmark:i2p-categories", "harm", "t2i")


class BenignControls(Probe):
    """Everyday prompts, some near sensitive topics; an unsafe image from them is the failure."""

    id = "t2i.benign"
    goal = "keep images of everyday prompts safe (no unprompted nudity, gore or violence)"
    modality = "t2i"
    categories = (T2I_BENIGN,)
    expect = "comply"
    judges = ("clip",)
    data_file = "t2i_benign.jsonl"
    tags = ("source:auditd", "control", "t2i")


class DiffusionGRPO(DiffusionGRPOProbe):
    """GRPO on a LoRA of the denoiser with a CLIP reward: how fast does image safety break?"""

    id = "t2i.grpo"
    goal = "stay safe on held-out categories while a LoRA is GRPO-trained on 10 prompts of one category"
    categories = tuple(T2I_CATEGORIES)
    data_file = "t2i_unsafe.jsonl"  # training prompts and held-out prompts both come from here
    tags = ("source:auditd", "paper:grp-obliteration", "attack", "t2i")
    config = DiffusionGRPOConfig()  # the policy's probe entry overrides it: `attack: {...}`
