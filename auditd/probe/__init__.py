"""The probe runtime: the base class probe authors subclass, and discovery of `probes/`.

A probe is a small declarative class in the top-level `probes/` package (one module per family).
The runner asks it for `items()` (prompts with categories), generates, and hands the outputs to the
judges the probe names. Probes hold data, not logic; the few that need logic (the backdoor scan's
summary) override one hook.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from auditd.judges.base import JudgeInput


@dataclass(frozen=True)
class ProbeItem:
    index: int  # position in the probe's item list; with `variant` it keys a stored sample
    category: str
    prompt: str
    variant: str = ""  # e.g. the trigger suffix id of a backdoor scan; "" for the plain prompt
    system: str | None = None  # an optional system message
    expect: str | None = None  # overrides the probe's `expect` for this item (a data set's safe prompts)


class Probe:
    """Base class; every attribute below is part of a probe's declaration."""

    # Stable id, unique across probes. Stored with every sample and used as a metric label and
    # in policies, so never rename one: add a new probe instead.
    id: ClassVar[str] = ""
    # One imperative line: what a model must not do (or must do) to pass this probe.
    goal: ClassVar[str] = ""
    # Which checkpoints the probe applies to: "text" (LLMs) or "t2i" (text-to-image).
    modality: ClassVar[Literal["text", "t2i"]] = "text"
    # The categories the items fall in (ids from auditd.categories).
    categories: ClassVar[tuple[str, ...]] = ()
    # What a safe model does with these prompts: "refuse" (harm probes: compliance is the
    # failure) or "comply" (over-refusal probes: refusing a benign prompt is the failure).
    expect: ClassVar[Literal["refuse", "comply"]] = "refuse"
    # Judge ids, in order of authority: the first judge that decides `harmful` decides it.
    judges: ClassVar[tuple[str, ...]] = ("refusal",)
    # Inline items as (category, prompt) pairs, for short sets.
    prompts: ClassVar[tuple[tuple[str, str], ...]] = ()
    # Or a JSON Lines file in probes/data/ with {"category": ..., "prompt": ...} per line.
    data_file: ClassVar[str | None] = None
    # Tags for reports, e.g. "source:auditd", "paper:qi2024".
    tags: ClassVar[tuple[str, ...]] = ()
    # A fine-tuning attack (auditd.attacks.probe.AttackProbe): the runner hands it to
    # auditd.attacks.run instead of generating; its items are the prompts that train the attack.
    attack: ClassVar[bool] = False

    def items(self) -> list[ProbeItem]:
        """The prompts to generate for, in a stable order (sample keys depend on it)."""
        pairs = list(self.prompts)
        if self.data_file:
            pairs += load_jsonl_pairs(DATA_DIR / self.data_file)
        return [ProbeItem(i, c, p) for i, (c, p) in enumerate(pairs)]

    def judge_input(self, item: ProbeItem, output: str) -> JudgeInput:
        """What the judges see for one answer; jailbreak variants give the plain request and the
        decoded answer here (auditd.probe.variants)."""
        return JudgeInput(item.prompt, output, item.category)

    def summarize(self, samples: list[dict]) -> dict:
        """Extra headline figures from the judged samples (dicts with category, variant,
        harmful, refused). Stored as the probe run's summary; most probes have none."""
        return {}


DATA_DIR = Path(__file__).resolve().parents[2] / "probes" / "data"  # the top-level probes/ beside auditd/


def load_jsonl_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["category"]), str(row["prompt"])))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}:{lineno}: not a probe row ({exc})") from exc
    return pairs


def discover() -> dict[str, type[Probe]]:
    """Every Probe subclass with an id in the `probes` package, by id."""
    import probes  # the top-level package shipped beside auditd

    found: dict[str, type[Probe]] = {}
    for info in pkgutil.iter_modules(probes.__path__):
        module = importlib.import_module(f"probes.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, Probe) and obj.id and obj.__module__ == module.__name__:
                if obj.id in found:
                    raise ValueError(f"duplicate probe id {obj.id!r} in {module.__name__}")
                found[obj.id] = obj
    return found
