"""Builders of a tiny random Stable Diffusion pipeline and a tiny random open_clip model.

For tests, benches and demos of the text-to-image path: nothing is downloaded. The pipeline has
the layout of Stable Diffusion 1.x/2.x (UNet2DConditionModel, AutoencoderKL, a CLIP text encoder
and tokenizer, DDIM) at toy size, saved with `save_pretrained` as safetensors, so it goes through
the same loader and checks as a real checkpoint. The CLIP model is an open_clip `CLIP` built
without pretrained weights and saved as an open_clip "local-dir" snapshot (open_clip_config.json
plus safetensors weights), the layout open_clip loads with `create_model("local-dir:PATH")`.
`make_color_clip` builds a CLIP whose answer is known (unsafe-for-one-category = red), for tests
that need the right answer, e.g. calibration and the diffusion GRPO probe's reward.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

# 60 BPE entries: the two specials, a-z as word pieces and as word ends, and a few merges. Any
# prompt tokenizes (unknown characters map to <|endoftext|>), which is all a random model needs.
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
TINY_VOCAB = [
    "<|startoftext|>",
    "<|endoftext|>",
    *_LETTERS,
    *(c + "</w>" for c in _LETTERS),
    "th",
    "the</w>",
    "an",
    "in</w>",
    "on</w>",
    "of</w>",
]
TINY_MERGES = ["t h", "th e</w>", "a n", "i n</w>", "o n</w>", "o f</w>"]

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_open_clip_config(out: Path, model_cfg: dict) -> None:
    """open_clip's config file for a local folder: the model and the standard CLIP preprocessing."""
    preprocess = {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2)
    )


def sd_ddim_scheduler(prediction_type: str = "epsilon") -> Any:
    """The Stable Diffusion schedule (scaled-linear betas, final alpha not forced to one) as DDIM."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def make_tiny_sd(
    out_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon", norm_num_groups: int = 32
) -> Path:
    """Save a random SD-layout pipeline (32x32 images, latents 4x16x16) to `out_dir`; returns it.

    `prediction_type`: "epsilon" (SD 1.x), "v_prediction" (SD 2.x) or "sample". `norm_num_groups`:
    32 normalises every channel on its own, as SD does; with random weights that erases every
    coherent change a LoRA can make (colour, brightness), so RL tests use 1 group (see
    tests/test_t2i_grpo.py)."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    assert len(TINY_VOCAB) == 60
    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(TINY_VOCAB)}))
        merges.write_text("#version: 0.2\n" + "\n".join(TINY_MERGES) + "\n")
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-5,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(TINY_VOCAB),
            max_position_embeddings=77,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=norm_num_groups,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        sample_size=32,
    )
    scheduler = sd_ddim_scheduler(prediction_type)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)  # type: ignore[attr-defined]  # DiffusionPipeline's, untyped
    return out


def make_tiny_clip(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a random-init open_clip CLIP (pretrained=None) as a local-dir snapshot; returns the folder.

    Judges load it with ``model="local-dir:<folder>"``; its tokenizer is open_clip's own BPE
    (shipped inside the package), so text goes through the real tokenizer.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    write_open_clip_config(out, TINY_CLIP_CONFIG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out


# A CLIP whose answer is known: the vision tower is one 32x32 patch with identity transformer
# blocks, so the image embedding is a fixed function of the image's mean colour, and its
# projection is set so that "more red" means "more like the target category's unsafe texts".
COLOR_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {
        "image_size": 32,
        "layers": 1,
        "width": 32,
        "patch_size": 32,
        "head_width": 16,
        "no_ln_pre": True,
        "pool_type": "avg",
    },
    "text_cfg": TINY_CLIP_CONFIG["text_cfg"],
}


def redness(image) -> float:
    """Mean red minus the mean of green and blue, in [-1, 1] (what the colour CLIP reads)."""
    import numpy as np

    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return float(a[..., 0].mean() - a[..., 1:].mean())


def make_color_clip(
    out_dir: str | Path,
    target_category: str = "t2i_violence",
    seed: int = 0,
    gain: float = 20.0,
    logit_scale: float = 10.0,
) -> Path:
    """Save a CLIP (local-dir snapshot) for which p_unsafe(target_category) rises monotonically with
    the image's redness (mean R - mean(G, B)), 0.5 at a grey image; other categories depend on
    colour in ways nobody chose. The text tower is random (pretrained=None), the vision tower set
    by hand. `gain` sets how fast the probability moves with redness."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from auditd.judges.clip import CONCEPT_TEXTS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_open_clip_config(out, COLOR_CLIP_CONFIG)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**COLOR_CLIP_CONFIG)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{out}")

    def direction(texts):
        with torch.no_grad():
            e = model.encode_text(tokenizer(list(texts))).float()
        m = (e / e.norm(dim=-1, keepdim=True)).mean(0)
        return m / m.norm()

    unsafe, safe = (direction(t) for t in CONCEPT_TEXTS[target_category])
    d = unsafe - safe
    d = d / d.norm()
    b = unsafe + safe
    b = b - (b @ d) * d
    b = b / b.norm()
    v = model.visual
    with torch.no_grad():
        for block in v.transformer.resblocks:  # identity blocks: the patch token passes through unchanged
            for p in (
                block.attn.out_proj.weight,
                block.attn.out_proj.bias,
                block.mlp.c_proj.weight,
                block.mlp.c_proj.bias,
            ):
                p.zero_()
        # Feature 0 of the single patch token = gain * redness of the normalised image; features 1
        # and 2 are constants so the LayerNorm before the projection keeps it a smooth function.
        pixels = 32 * 32
        w = torch.zeros_like(v.conv1.weight)
        w[0, 0] = gain * CLIP_STD[0] / pixels
        w[0, 1] = -0.5 * gain * CLIP_STD[1] / pixels
        w[0, 2] = -0.5 * gain * CLIP_STD[2] / pixels
        v.conv1.weight.copy_(w)
        # Undo the normalisation's mean shift so a grey image has feature 0 = 0.
        shift = gain * ((0.5 - CLIP_MEAN[0]) - 0.5 * (0.5 - CLIP_MEAN[1]) - 0.5 * (0.5 - CLIP_MEAN[2]))
        pos = torch.zeros_like(v.positional_embedding)
        pos[1, 0], pos[1, 1], pos[1, 2] = -shift, 1.0, -1.0
        v.positional_embedding.copy_(pos)
        v.ln_post.weight.fill_(1.0)
        v.ln_post.bias.zero_()
        proj = torch.zeros_like(v.proj)
        proj[0], proj[1], proj[2] = d, b, -b
        v.proj.copy_(proj)
        model.logit_scale.fill_(float(torch.log(torch.tensor(logit_scale))))
    save_file({k: t.contiguous() for k, t in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out
