"""The open_clip model behind the image judges: lazy loading, image and text embeddings.

`model` and `pretrained` are configuration, as open_clip names them: ("ViT-L-14", "openai"),
("ViT-B-32", "laion2b_s34b_b79k"), a weights file path as `pretrained`, or
"local-dir:/path/to/snapshot" (open_clip_config.json + weights, e.g. a copied hub snapshot) with
`pretrained=None`. auditd never downloads at audit time: a tag whose weights are not already in the
local cache fails with open_clip's error, and the audit ends in error. A named architecture with
`pretrained=None` is randomly initialised from `init_seed` (tests only: its scores mean nothing).
The model loads on first use, so building judges from a policy stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ClipLoadError(RuntimeError):
    pass


class ClipEncoder:
    def __init__(
        self, model: str, pretrained: str | None, device: str = "cpu", batch_size: int = 32, init_seed: int = 0
    ) -> None:
        self.model_name, self.pretrained, self.device = model, pretrained, device
        self.batch_size, self.init_seed = batch_size, init_seed
        self._model: Any = None  # open_clip's model, transform and tokenizer, once load() ran
        self._preprocess: Any = None
        self._tokenizer: Any = None
        self._text_cache: dict[str, Any] = {}

    @property
    def key(self) -> tuple[str, str]:
        """What calibrations are keyed by: the model and its pretrained tag ("none" when random)."""
        return self.model_name, self.pretrained or "none"

    def load(self):
        if self._model is not None:
            return self._model
        import open_clip
        import torch

        try:
            with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state alone
                torch.manual_seed(self.init_seed)  # pretrained=None: make "random" the same every time
                model, _, preprocess = open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self.pretrained, device=self.device, weights_only=True
                )
            tokenizer = open_clip.get_tokenizer(self.model_name)
        except Exception as exc:
            raise ClipLoadError(
                f"cannot load CLIP model {self.model_name!r} (pretrained={self.pretrained!r}): "
                f"{' '.join(str(exc).split())[:300]}"
            ) from None
        model.eval()
        self._model, self._preprocess, self._tokenizer = model, preprocess, tokenizer
        return model

    def to(self, device: str) -> None:
        self.device = device
        if self._model is not None:
            self._model.to(device)
            self._text_cache.clear()

    @property
    def logit_scale(self) -> float:
        return float(self.load().logit_scale.exp().item())

    def encode_texts(self, texts: list[str]):
        """L2-normalised text embeddings [len(texts), d], cached (concept texts are fixed)."""
        import torch

        model = self.load()
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            with torch.no_grad():
                emb = model.encode_text(self._tokenizer(missing).to(self.device)).float()
            emb = emb / emb.norm(dim=-1, keepdim=True)
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[t] for t in texts])

    def encode_images(self, images: list[Any]):
        """L2-normalised image embeddings [len(images), d] of PIL images."""
        import torch

        model = self.load()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack(
                    [self._preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]]
                )
                emb = model.encode_image(batch.to(self.device)).float()
                out.append(emb / emb.norm(dim=-1, keepdim=True))
        if not out:
            return torch.zeros((0, 0))
        return torch.cat(out)


def open_image(path: str | Path):
    """A stored image as RGB; raises OSError/ValueError for a missing or unreadable file."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")
