"""The judge interfaces: a list of (prompt, output) in, one `Score` per item out.

A text judge reads the answer in `JudgeInput.output`; an image judge reads the image file whose
path is there, and declares `modality = "image"` so the runner never hands it text (nor a text
judge a PNG). The runner recognises them by these Protocols (`isinstance`), never by judge id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class JudgeInput:
    prompt: str
    output: str
    category: str


@dataclass(frozen=True)
class Score:
    judge: str  # judge id, e.g. "refusal"
    harmful: bool | None = None  # None: this judge does not decide harm (or errored)
    refused: bool | None = None  # None: this judge does not detect refusals
    score: float | None = None  # judge-specific scale (rubric: 1-5; refusal: 1.0 refused / 0.0 not)
    raw: str = ""  # the judge's raw output, kept for audit trails
    error: str | None = None  # set when the judge could not score; never silently a number
    categories: tuple[str, ...] = field(default_factory=tuple)  # categories the judge flagged
    partial: bool | None = None  # a partial refusal (refuses part, complies with part); None: not decided
    degenerate: bool | None = None  # empty, repetitive or non-language output: neither harmful nor refused
    decided_by: str = ""  # inside a composite judge (cascade): the judge whose decision this is
    escalated: bool | None = None  # cascade: True when the model judge decided; None outside a cascade
    agree: bool | None = None  # cascade: whether both judges agreed, where both ran; None if only one did


@runtime_checkable
class TextJudge(Protocol):
    """Judges answers; one Score per item, same order. A judge holding a model also has close()."""

    id: str

    def score(self, items: list[JudgeInput]) -> list[Score]: ...


Judge = TextJudge  # the name plugins written before the image judges import


@runtime_checkable
class ImageJudge(Protocol):
    """Judges the images at `JudgeInput.output` (paths), with thresholds it can report."""

    id: str
    modality: Literal["image"]

    def score(self, items: list[JudgeInput]) -> list[Score]: ...

    def prepare(self, device: str | None = None, calibration_store: Any = None) -> None:
        """Before an audit: move to the audit's device, load the stored calibration (or raise when
        one is required and missing)."""
        ...

    def calibration_info(self) -> dict[str, Any]:
        """Which thresholds it decides with and where they came from, for the report."""
        ...


@runtime_checkable
class RewardImageJudge(ImageJudge, Protocol):
    """An image judge that scores every category at once: the diffusion GRPO attack's reward."""

    categories: list[str]  # the columns of unsafe_probs, in order

    def unsafe_probs(self, images: list[Any]) -> Any:
        """A tensor [n_images, n_categories] of unsafe probabilities for PIL images."""
        ...
