"""Thresholds of the image judges, calibrated per CLIP model and pretrained tag, and stored.

A CLIP score means nothing until it is compared with a threshold, and a threshold tuned for one
CLIP (ViT-L-14/openai) is wrong for another (similarities of a different model sit elsewhere). So
every threshold is calibrated on labelled images for one (judge, model, pretrained) and stored in
``<home>/calibration.json``; the judges look it up when an audit starts and report which
thresholds they used (calibrated, set in the policy, or the uncalibrated defaults) with the verdict.

Calibration rule (per signal: a zero-shot category or a concept): given the scores of unsafe
images of that category (positives) and of safe images (negatives), take the lowest threshold
whose false-positive rate on the negatives is at most `target_fpr`, placed halfway between the
highest negative it must exceed and the next score above it, so it keeps a margin on both sides.
A folder of labelled images is laid out as ``<dir>/safe/*.png`` and ``<dir>/<category>/*.png``
with category ids from `auditd.categories.T2I_CATEGORIES` (and, for the concept judge's
special-care concepts, ``<dir>/special_care/`` with safe images of children; without it those
thresholds keep their defaults).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditd.store.atomic import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
SAFE_DIR = "safe"
SPECIAL_CARE_DIR = "special_care"  # safe images of children, for the concept judge's special-care concepts


class CalibrationError(ValueError):
    pass


@dataclass(frozen=True)
class Threshold:
    value: float
    tpr: float | None  # share of positives at or above the threshold (None without positives)
    fpr: float  # share of negatives at or above it
    n_pos: int
    n_neg: int


def choose_threshold(pos: list[float], neg: list[float], target_fpr: float = 0.05) -> Threshold:
    """The lowest threshold with FPR <= target_fpr on `neg` (flag when score >= threshold)."""
    if not neg:
        raise CalibrationError("calibration needs safe (negative) examples")
    if not 0 <= target_fpr < 1:
        raise CalibrationError("target_fpr must be in [0, 1)")
    negs = sorted(neg, reverse=True)
    allowed = math.floor(target_fpr * len(negs) + 1e-9)  # negatives that may sit at or above it (< len)
    must_exceed = negs[allowed]
    above = [x for x in (*pos, *negs) if x > must_exceed]
    value = (must_exceed + min(above)) / 2 if above else must_exceed + 1e-6
    fpr = sum(x >= value for x in neg) / len(neg)
    tpr = sum(x >= value for x in pos) / len(pos) if pos else None
    return Threshold(value=value, tpr=tpr, fpr=fpr, n_pos=len(pos), n_neg=len(neg))


@dataclass
class Calibration:
    judge: str
    model: str
    pretrained: str
    thresholds: dict[str, float]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_fpr: float = 0.05
    source: str = ""  # where the labelled images came from
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def key(self) -> str:
        return calibration_key(self.judge, self.model, self.pretrained)


def calibration_key(judge: str, model: str, pretrained: str | None) -> str:
    return f"{judge}|{model}|{pretrained or 'none'}"


class CalibrationStore:
    """All calibrations of one auditd home, in one small JSON file (atomic rewrites)."""

    FILE = "calibration.json"

    def __init__(self, home: str | Path):
        self.path = Path(home) / self.FILE

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{self.path}: unreadable calibration file: {exc}") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{self.path}: calibration file must be a JSON object")
        return data

    def get(self, judge: str, model: str, pretrained: str | None) -> Calibration | None:
        row = self._read().get(calibration_key(judge, model, pretrained))
        return Calibration(**row) if row else None

    def put(self, cal: Calibration) -> None:
        data = self._read()
        data[cal.key] = asdict(cal)
        atomic_write(self.path, json.dumps(data, indent=2, sort_keys=True).encode(), mode=0o600)

    def all(self) -> list[Calibration]:
        return [Calibration(**row) for row in self._read().values()]


def labelled_images(folder: str | Path) -> dict[str, list[Path]]:
    """{"safe": [...], "<category>": [...]} from a folder of labelled images."""
    from auditd.categories import T2I_CATEGORIES

    root = Path(folder)
    if not root.is_dir():
        raise CalibrationError(f"{root}: not a folder of labelled images")
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in (SAFE_DIR, SPECIAL_CARE_DIR, *T2I_CATEGORIES):
            raise CalibrationError(
                f"{sub}: unknown label folder (use '{SAFE_DIR}', '{SPECIAL_CARE_DIR}' "
                f"or one of {', '.join(T2I_CATEGORIES)})"
            )
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            found[sub.name] = files
    if SAFE_DIR not in found:
        raise CalibrationError(f"{root}: needs a '{SAFE_DIR}/' folder of safe images")
    return found


def calibrate(judge, images: dict[str, list[Any]], target_fpr: float = 0.05, source: str = "") -> Calibration:
    """Calibrate an image judge on labelled PIL images ({"safe": [...], category: [...]}).

    The judge provides `signals(images) -> (names, rows)` (one score per signal per image),
    `signal_category(name)` and `calibration_identity() -> (judge id, model, pretrained)`.
    """
    from auditd.categories import T2I_CATEGORIES

    labels = [label for label, ims in images.items() for _ in ims]
    flat = [im for ims in images.values() for im in ims]
    names, rows = judge.signals(flat)
    thresholds, stats = {}, {}
    for j, name in enumerate(names):
        category = judge.signal_category(name)
        if category not in images and category not in T2I_CATEGORIES:
            continue  # e.g. special-care concepts without a special_care/ folder keep their defaults
        pos = [row[j] for row, label in zip(rows, labels) if label == category]
        neg = [row[j] for row, label in zip(rows, labels) if label == SAFE_DIR]
        t = choose_threshold(pos, neg, target_fpr)
        thresholds[name] = t.value
        stats[name] = asdict(t)
    judge_id, model, pretrained = judge.calibration_identity()
    return Calibration(
        judge=judge_id,
        model=model,
        pretrained=pretrained or "none",
        thresholds=thresholds,
        stats=stats,
        target_fpr=target_fpr,
        source=source,
    )
