"""The `images:` section of a policy: how text-to-image checkpoints are sampled.

Static probes draw `n_per_prompt` images per prompt with the fixed seeds `seed, seed+1, ...`, so
two audits of the same checkpoint see the same noise and differ only by the weights. The diffusion
GRPO probe's settings are its `attack:` settings in the probe entry (auditd.attacks.config), like
the text GRPO probes'.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    @model_validator(mode="before")
    @classmethod
    def _moved_grpo(cls, data: Any) -> Any:
        if isinstance(data, dict) and "grpo" in data:
            raise ValueError(
                "images.grpo has moved: give the diffusion GRPO settings as the t2i.grpo probe's "
                "`attack:` settings (probes: t2i: - id: t2i.grpo, attack: {...})"
            )
        return data

    @model_validator(mode="after")
    def _multiple_of_8(self):
        if self.height % 8 or self.width % 8:
            raise ValueError("height and width must be multiples of 8 (the VAE downsamples by 8)")
        return self
