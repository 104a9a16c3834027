"""The judge interface: a list of (prompt, output) in, one `Score` per item out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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


class Judge(Protocol):
    id: str

    def score(self, items: list[JudgeInput]) -> list[Score]: ...
