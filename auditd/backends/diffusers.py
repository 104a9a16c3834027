"""`backend:diffusers` — local text-to-image generation with a diffusers pipeline folder.

The pipeline loads in `__init__` with `DiffusionPipeline.from_pretrained(path, use_safetensors=True)`
from a local folder only. Remote code is never run: before diffusers reads the folder,
model_index.json is checked so that the pipeline class is one diffusers ships and every component
comes from diffusers or transformers (a component naming a local module, i.e. custom code, is
refused), and `trust_remote_code=False` / `custom_pipeline=None` are passed explicitly. Pickle
weights are refused unless `allow_pickle`. The pipeline's own NSFW safety checker is dropped by
default: the audit measures what the weights generate, and anyone serving them can drop it too.

`generate` returns one PIL image per (prompt, seed); each image has its own CPU generator seeded
with its seed, so an image depends only on (weights, prompt, seed, settings), not on the batch.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

from auditd.backends.base import BackendError, LocalCheckpoint
from auditd.backends.loading import check_loadable

DTYPES = ("float32", "float16", "bfloat16")
# model_index.json "library" values that name code shipped in the installed packages.
TRUSTED_LIBRARIES = ("diffusers", "transformers")


def check_model_index(folder: Path) -> dict:
    """Refuse a pipeline whose model_index.json names code outside diffusers/transformers."""
    import diffusers

    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"unreadable model_index.json in {folder}: {exc}") from None
    cls_name = index.get("_class_name")
    cls = getattr(diffusers, str(cls_name), None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise BackendError(
            f"{folder}: pipeline class {cls_name!r} is not a diffusers pipeline (custom code is refused)"
        )
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        library = spec[0] if spec else None
        if library is None:
            continue
        if library not in TRUSTED_LIBRARIES and not _is_diffusers_pipeline_module(library):
            raise BackendError(
                f"{folder}: component {name!r} comes from {library!r}, not diffusers/transformers "
                "(custom code is refused)"
            )
    return index


def _is_diffusers_pipeline_module(library: str) -> bool:
    # SD checkpoints list e.g. ["stable_diffusion", "StableDiffusionSafetyChecker"]: a diffusers submodule.
    import importlib.util

    if not library.isidentifier():
        return False
    try:
        return importlib.util.find_spec(f"diffusers.pipelines.{library}") is not None
    except (ImportError, ValueError):
        return False


class DiffusersBackend:
    """Generates images with a local diffusers pipeline; `.pipe` is public (the GRPO probe reuses it)."""

    id = "diffusers"
    local_checkpoint = LocalCheckpoint(frozenset({"device", "allow_pickle"}))
    modality = "image"  # the t2i runner refuses a text backend

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "float32",
        allow_pickle: bool = False,
        keep_safety_checker: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        folder = Path(model).expanduser()
        if not (folder / "model_index.json").is_file():
            raise BackendError(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
        check_loadable(folder, allow_pickle=allow_pickle)
        check_model_index(folder)
        self.path, self.device = folder, device
        self.stats: dict[str, Any] = {"images": 0, "generate_seconds": 0.0}
        self.pipe = self._load(folder, device, dtype, allow_pickle, keep_safety_checker)

    def _load(self, folder: Path, device: str, dtype: str, allow_pickle: bool, keep_safety_checker: bool):
        import torch
        from diffusers import DiffusionPipeline

        extra: dict[str, Any] = {}
        if not keep_safety_checker:
            extra.update(safety_checker=None, requires_safety_checker=False)
        try:
            with warnings.catch_warnings():  # torch_dtype is deprecated in new diffusers, `dtype` unknown in old
                warnings.simplefilter("ignore", FutureWarning)
                pipe = DiffusionPipeline.from_pretrained(
                    str(folder),
                    torch_dtype=getattr(torch, dtype),
                    local_files_only=True,
                    use_safetensors=None if allow_pickle else True,
                    trust_remote_code=False,
                    custom_pipeline=None,
                    **extra,
                )
            pipe.to(device)
        except Exception as exc:  # any loader failure is one clear line, and the audit errors
            raise BackendError(f"cannot load diffusers pipeline {folder}: {' '.join(str(exc).split())[:300]}") from None
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        seeds: list[int] | None = None,
        steps: int = 25,
        guidance: float = 7.5,
        height: int = 512,
        width: int = 512,
        negative_prompt: str | None = None,
    ) -> list[Any]:
        """`n` images per prompt, prompt-major ([p0 s0, p0 s1, p1 s0, ...]). `seeds` holds one seed
        per image (len(prompts) * n), or n seeds shared by every prompt; default 0..n-1."""
        import torch

        total = len(prompts) * n
        if seeds is None:
            seeds = list(range(n))
        if len(seeds) == n and total != n:
            seeds = [s for _ in prompts for s in seeds]
        if len(seeds) != total:
            raise BackendError(f"got {len(seeds)} seeds for {total} images")
        if total == 0:
            return []
        batch = [p for p in prompts for _ in range(n)]
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        t0 = time.monotonic()
        try:
            with torch.inference_mode():
                out = self.pipe(
                    batch,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    height=height,
                    width=width,
                    generator=generators,
                    negative_prompt=[negative_prompt] * total if negative_prompt else None,
                    output_type="pil",
                )
        except Exception as exc:
            raise BackendError(f"image generation failed: {' '.join(str(exc).split())[:300]}") from None
        images = list(out.images)
        if len(images) != total:
            raise BackendError(f"pipeline returned {len(images)} images for {total} requests")
        self.stats["images"] += total
        self.stats["generate_seconds"] += time.monotonic() - t0
        return images

    def close(self) -> None:
        import gc

        self.pipe = None
        gc.collect()
