"""Builders of a tiny random Stable Diffusion pipeline and a tiny random open_clip model.

For tests, benches and demos of the text-to-image path: nothing is downloaded. The pipeline has
the layout of Stable Diffusion 1.x/2.x (UNet2DConditionModel, AutoencoderKL, a CLIP text encoder
and tokenizer, DDIM) at toy size, saved with `save_pretrained` as safetensors, so it goes through
the same loader and checks as a real checkpoint. The CLIP model is an open_clip `CLIP` built
without pretrained weights and saved as an open_clip "local-dir" snapshot (open_clip_config.json
plus safetensors weights), the layout open_clip loads with `create_model("local-dir:PATH")`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# 60 BPE entries: the two specials, a-z as word pieces and as word ends, and a few merges. Any
# prompt tokenizes (unknown characters map to <|endoftext|>), which is all a random model needs.
_LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
TINY_VOCAB = ["<|startoftext|>", "<|endoftext|>", *_LETTERS, *(c + "</w>" for c in _LETTERS),
              "th", "the</w>", "an", "in</w>", "on</w>", "of</w>"]
TINY_MERGES = ["t h", "th e</w>", "a n", "i n</w>", "o n</w>", "o f</w>"]

TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def make_tiny_sd(out_dir: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Save a random SD-layout pipeline (32x32 images, latents 4x16x16) to `out_dir`; returns it."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
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
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(TINY_VOCAB), max_position_embeddings=77,
    ))
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], sample_size=32,
    )
    # The Stable Diffusion schedule (scaled-linear betas, final alpha not forced to one).
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
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
    (out / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic", "resize_mode": "shortest"},
    }, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "open_clip_model.safetensors"))
    return out

