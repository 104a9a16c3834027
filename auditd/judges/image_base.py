"""What the CLIP image judges share: options, thresholds and where they came from, scoring loop.

An image judge reads the image at `JudgeInput.output` (a path), turns it into named signals (a
zero-shot probability per category, or a cosine per concept), and flags the signals at or above
their thresholds. Thresholds come, in this order, from the policy (`thresholds:` option), from a
stored calibration for this judge, model and pretrained tag, or from the judge's defaults; which
one was used is reported with the verdict (`calibration_info`). With `require_calibration: true`
an audit whose CLIP has no stored calibration ends in error instead of using defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from auditd.judges.base import ImageJudge, JudgeInput, Score
from auditd.judges.clip_model import ClipEncoder, open_image

if TYPE_CHECKING:
    from auditd.judges.calibration import Calibration


class UncalibratedError(RuntimeError):
    pass


class ImageJudgeError(ValueError):
    """A judge the policy gives an image probe cannot judge images, or is not ready to."""


def prepare_image_judges(
    judges: Mapping[str, object], judge_ids: list[str], device: str | None, calibration_store: Any
) -> list[dict[str, Any]]:
    """Check the judges read images, give them the audit's device and calibration; their threshold
    info for the report. Uncalibrated with require_calibration, or an unreadable store: an error."""
    infos = []
    for j in judge_ids:
        judge = judges[j]
        if not isinstance(judge, ImageJudge):
            raise ImageJudgeError(f"judge {j!r} cannot judge images; use an image judge (clip, concept)")
        try:
            judge.prepare(device=device, calibration_store=calibration_store)
        except Exception as exc:  # fail closed: the audit ends in error with this one line
            raise ImageJudgeError(str(exc)) from None
        infos.append(judge.calibration_info())
    return infos


class ImageJudgeBase:
    id = ""
    modality = "image"  # the t2i runner refuses judges without it (a text judge cannot read a PNG)

    def __init__(
        self,
        model: str = "ViT-L-14",
        pretrained: str | None = "openai",
        device: str | None = None,
        batch_size: int = 32,
        init_seed: int = 0,
        thresholds: dict[str, float] | None = None,
        require_calibration: bool = False,
    ) -> None:
        # model / pretrained: open_clip names (see auditd.judges.clip_model); device: None follows
        # the audit's device; thresholds: per-signal overrides; require_calibration: fail closed
        # when no calibration is stored for this CLIP.
        self.encoder = ClipEncoder(model, pretrained, device or "cpu", batch_size, init_seed)
        self._device_set = device is not None
        self.defaults = dict(self.default_thresholds())
        unknown = sorted(set(thresholds or {}) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"judge {self.id!r}: unknown threshold name(s) {', '.join(unknown)}; known: {', '.join(self.defaults)}"
            )
        self.policy_thresholds = dict(thresholds or {})
        self.require_calibration = require_calibration
        self.calibration: Calibration | None = None  # a stored Calibration, once prepare() found one
        self.thresholds = {**self.defaults, **self.policy_thresholds}

    # -- to be provided by each judge ----------------------------------------------------------
    def default_thresholds(self) -> dict[str, float]:
        raise NotImplementedError

    def signal_category(self, name: str) -> str:
        raise NotImplementedError

    def signals_from_embeddings(self, image_emb) -> tuple[list[str], list[list[float]]]:
        raise NotImplementedError

    def decide(self, item: JudgeInput, values: dict[str, float]) -> Score:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------------
    def calibration_identity(self) -> tuple[str, str, str | None]:
        return self.id, self.encoder.model_name, self.encoder.pretrained

    def prepare(self, device: str | None = None, calibration_store=None) -> None:
        """Called by the runner before an audit: the audit's device and the stored calibration."""
        if device and not self._device_set:
            self.encoder.to(device)
        if calibration_store is not None:
            self.calibration = calibration_store.get(*self.calibration_identity())
        if self.calibration is None and self.require_calibration:
            judge, model, tag = self.calibration_identity()
            raise UncalibratedError(
                f"judge {judge!r} requires a calibration for CLIP {model}/{tag or 'none'}, "
                "and none is stored (run `auditd calibrate`)"
            )
        stored = {
            k: v for k, v in (self.calibration.thresholds if self.calibration else {}).items() if k in self.defaults
        }
        self.thresholds = {**self.defaults, **stored, **self.policy_thresholds}

    def calibration_info(self) -> dict[str, Any]:
        """Which thresholds this judge decides with, for the report beside the verdict."""
        _, model, tag = self.calibration_identity()
        source = "policy" if self.policy_thresholds else "calibrated" if self.calibration else "default"
        info: dict[str, Any] = {
            "judge": self.id,
            "model": model,
            "pretrained": tag or "none",
            "source": source,
            "thresholds": dict(self.thresholds),
        }
        return info | calibration_info(self.calibration)

    def signals(self, images: list[Any]) -> tuple[list[str], list[list[float]]]:
        """Named scores for PIL images (the calibration interface)."""
        return self.signals_from_embeddings(self.encoder.encode_images(images))

    def score(self, items: list[JudgeInput]) -> list[Score]:
        images, ok, errors = load_images(items)
        names, rows = self.signals(images) if images else ([], [])
        by_index = {i: dict(zip(names, row)) for i, row in zip(ok, rows)}
        return [
            Score(judge=self.id, error=errors[i]) if i in errors else self.decide(item, by_index[i])
            for i, item in enumerate(items)
        ]


def calibration_info(calibration: Any) -> dict[str, Any]:
    """What a judge's `info()` says of its calibration (nothing when uncalibrated)."""
    if not calibration:
        return {}
    return {
        "calibrated_at": calibration.created_at,
        "target_fpr": calibration.target_fpr,
        "calibration_source": calibration.source,
    }


def raw_json(values: dict[str, float]) -> str:
    return json.dumps({k: round(float(v), 5) for k, v in values.items()}, sort_keys=True)


def load_images(items: list[JudgeInput]) -> tuple[list[Any], list[int], dict[int, str]]:
    """(the images that open, their item indexes, {index: error} for those that do not): a missing
    or broken image is a judge error, never a score."""
    images, ok = [], []
    errors: dict[int, str] = {}
    for i, item in enumerate(items):
        try:
            images.append(open_image(item.output))
            ok.append(i)
        except (OSError, ValueError) as exc:
            errors[i] = f"cannot read image {item.output!r}: {' '.join(str(exc).split())[:200]}"
    return images, ok, errors
