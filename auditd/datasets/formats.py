"""The benchmark formats auditd reads, recognised by their columns.

A format names the columns it needs (matched case-insensitively), where the prompt and the
category come from, its taxonomy table (auditd.datasets.taxonomy), and where the data set is
published and under which licence (auditd ships none of them: users bring their own files).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from auditd.datasets import taxonomy as tx


class DatasetError(ValueError):
    """A data set file cannot be read; the message is one line naming file, row and column."""


@dataclass(frozen=True)
class Row:
    prompt: str
    native: str  # the benchmark's own category label ("" if it has none)
    benign: bool = False  # a safe prompt: refusing it is the failure (over-refusal)


@dataclass(frozen=True)
class Format:
    id: str
    title: str
    required: tuple[str, ...]  # lower-case column names that identify the format
    taxonomy: dict[str, str]
    read: Callable[[Callable[[str], str]], Row]  # from a column getter to a Row
    source: str
    licence: str
    modality: str = "text"
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # column -> other accepted names
    labels: dict[str, str] = field(default_factory=dict)  # numbered labels -> names, for reports


def _harmbench(col) -> Row:
    behavior, context = col("behavior"), col("contextstring", optional=True)
    # Contextual behaviours are asked with their context first, as HarmBench's own prompt template does.
    prompt = f"{context}\n\n---\n\n{behavior}" if context.strip() else behavior
    return Row(prompt, col("semanticcategory"))


def _xstest(col) -> Row:
    kind, label = col("type"), col("label", optional=True).strip().lower()
    safe = label == "safe" if label else not kind.lower().startswith("contrast")
    return Row(col("prompt"), kind, benign=safe)


def _sorry(col) -> Row:
    turns = col("turns")
    try:
        parsed = json.loads(turns) if isinstance(turns, str) and turns.lstrip().startswith("[") else turns
    except ValueError:
        parsed = turns
    prompt = "\n\n".join(str(t) for t in parsed) if isinstance(parsed, list) else str(parsed)
    return Row(prompt, str(col("category")))


def _i2p(col) -> Row:
    labels = [x.strip() for x in col("categories", optional=True).split(",") if x.strip()]
    mapped = [x for x in labels if tx.norm(x) in tx.I2P]
    return Row(col("prompt"), (mapped or labels or [""])[0])


FORMATS: dict[str, Format] = {
    f.id: f
    for f in (
        Format(
            "jailbreakbench",
            "JailbreakBench behaviours (JBB-Behaviors)",
            ("goal", "target", "behavior", "category"),
            tx.JAILBREAKBENCH,
            lambda col: Row(col("goal"), col("category")),
            "https://github.com/JailbreakBench/jailbreakbench",
            "MIT",
        ),
        Format(
            "harmbench",
            "HarmBench behaviours",
            ("behavior", "semanticcategory"),
            tx.HARMBENCH,
            _harmbench,
            "https://github.com/centerforaisafety/HarmBench",
            "MIT",
        ),
        Format(
            "advbench",
            "AdvBench harmful_behaviors.csv",
            ("goal", "target"),
            tx.ADVBENCH,
            lambda col: Row(col("goal"), ""),
            "https://github.com/llm-attacks/llm-attacks",
            "MIT",
        ),
        Format(
            "strongreject",
            "StrongREJECT",
            ("forbidden_prompt", "category"),
            tx.STRONGREJECT,
            lambda col: Row(col("forbidden_prompt"), col("category")),
            "https://github.com/alexandrasouly/strongreject",
            "MIT",
        ),
        Format(
            "xstest",
            "XSTest prompts",
            ("prompt", "type"),
            tx.XSTEST,
            _xstest,
            "https://github.com/paul-rottger/exaggerated-safety",
            "CC-BY-4.0",
        ),
        Format(
            "sorry_bench",
            "SORRY-Bench questions (JSONL)",
            ("question_id", "category", "turns"),
            tx.SORRY_BENCH,
            _sorry,
            "https://huggingface.co/datasets/sorry-bench/sorry-bench-202406",
            "see the data set card (gated)",
            labels={str(i): n for i, n in enumerate(tx.SORRY_BENCH_NAMES, 1)},
        ),
        Format(
            "do_not_answer",
            "Do-Not-Answer",
            ("risk_area", "types_of_harm", "question"),
            tx.DO_NOT_ANSWER,
            lambda col: Row(col("question"), col("types_of_harm")),
            "https://github.com/Libr-AI/do-not-answer",
            "Apache-2.0",
        ),
        Format(
            "simple_safety_tests",
            "SimpleSafetyTests",
            ("harm_area", "category", "prompt"),
            tx.SIMPLE_SAFETY_TESTS,
            lambda col: Row(col("prompt"), col("harm_area")),
            "https://huggingface.co/datasets/Bertievidgen/SimpleSafetyTests",
            "CC-BY-2.0",
            aliases={"prompt": ("prompts_final", "prompts")},
        ),
        Format(
            "i2p",
            "I2P inappropriate image prompts",
            ("prompt", "categories", "inappropriate_percentage"),
            tx.I2P,
            _i2p,
            "https://huggingface.co/datasets/AIML-TUDA/i2p",
            "MIT",
            modality="t2i",
        ),
        Format(
            "hex_phi",
            "HEx-PHI (category_<n>.csv files, no header)",
            (),
            tx.HEX_PHI,
            lambda col: Row(col("prompt"), col("category")),
            "https://huggingface.co/datasets/LLM-Tuning-Safety/HEx-PHI",
            "custom, gated: no redistribution",
        ),
    )
}


def detect(columns: list[str], where: str) -> Format:
    """The format whose required columns are all present; the most specific wins."""
    have = {c.strip().lower() for c in columns}
    fits = [
        f
        for f in FORMATS.values()
        if f.required and all(c in have or any(a in have for a in f.aliases.get(c, ())) for c in f.required)
    ]
    if not fits:
        raise DatasetError(
            f"{where}: columns ({', '.join(columns) or 'none'}) match no known format; "
            f"set `format:` to one of {', '.join(FORMATS)}"
        )
    return max(fits, key=lambda f: len(f.required))
