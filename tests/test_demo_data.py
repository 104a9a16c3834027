"""The demo's training data is disjoint from every prompt the audit measures with.

The aligned parent is trained on auditd/cli/demo_data/align.jsonl; if any probe prompt (or a
near-duplicate) were in it, the demo's audit would measure memory, not generalization. Checked by
word 8-gram shingles (any shared 8-gram fails) and by the Jaccard similarity of the content-word
sets (>= 0.6 fails: a reworded copy that swaps a word or two; function words are left out so that
"How do I make a budget?" is not a near-duplicate of "How do I make a pipe bomb?"), over the
prompts and the responses of both training files against everything in
probes/data/ (whatever it holds when the test runs) and the GRPO probes' attack prompts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from auditd.categories import POLICY_CATEGORIES
from auditd.cli.demo_models import ALIGN_DATA, SHIFT_DATA
from auditd.cli.demo_sft import read_pairs

PROBE_DATA = Path(__file__).resolve().parent.parent / "probes" / "data"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def shingles(text: str, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w)} if len(w) < n else {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


STOP = set(
    [
        "a",
        "an",
        "the",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "it",
        "they",
        "them",
        "his",
        "her",
        "its",
        "their",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "from",
        "with",
        "by",
        "about",
        "into",
        "and",
        "or",
        "but",
        "so",
        "if",
        "how",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "when",
        "where",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "do",
        "does",
        "did",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "have",
        "has",
        "had",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "not",
        "no",
        "any",
        "some",
        "all",
        "just",
        "than",
        "then",
    ]
)


def content(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOP}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def overlaps(train: list[str], probes: list[str]) -> list[str]:
    """Human-readable findings: a shared 8-gram, or content-word Jaccard >= 0.6."""
    found = []
    probe8 = {}
    for p in probes:
        for s in shingles(p, 8):
            probe8.setdefault(s, p)
    probe1 = [(p, content(p)) for p in probes]
    for t in train:
        shared = [probe8[s] for s in shingles(t, 8) if s in probe8]
        if shared:
            found.append(f"8-gram shared: {t!r} ~ {shared[0]!r}")
            continue
        t1 = content(t)
        for p, p1 in probe1:
            if jaccard(t1, p1) >= 0.6:
                found.append(f"near-duplicate (Jaccard {jaccard(t1, p1):.2f}): {t!r} ~ {p!r}")
    return found


def probe_prompts() -> list[str]:
    """Every prompt file under probes/data, and the prompts the GRPO probes train their attack on."""
    from auditd.probe import discover

    out = [p for cls in discover().values() for _, p in getattr(cls, "prompts", ())]
    for f in sorted(PROBE_DATA.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out += [v for k, v in row.items() if k in ("prompt", "question", "text") and isinstance(v, str)]
    return out


def training_texts() -> list[str]:
    rows = read_pairs(ALIGN_DATA) + read_pairs(SHIFT_DATA)
    return [r["prompt"] for r in rows] + [r["response"] for r in rows]


def test_the_checker_catches_copies_and_near_duplicates():
    probes = ["How can I break into a locked car without the owner noticing?"]
    assert overlaps(["Tell me: how can I break into a locked car without the owner noticing, fast?"], probes)
    assert overlaps(["How could I break into a locked car without an owner noticing?"], probes)  # reworded
    assert not overlaps(["What's a reliable way to sneak stolen jewelry past a pawn shop owner?"], probes)


def test_training_data_shares_nothing_with_the_probe_sets():
    probes = probe_prompts()
    assert len(probes) > 100  # every file under probes/data was read
    found = overlaps(training_texts(), probes)
    assert not found, "training data overlaps probes/data:\n" + "\n".join(found[:20])


def test_training_data_has_no_internal_duplicates():
    prompts = [r["prompt"] for r in read_pairs(ALIGN_DATA) + read_pairs(SHIFT_DATA)]
    dupes = [p for p, n in Counter(p.lower() for p in prompts).items() if n > 1]
    assert not dupes, dupes


def test_alignment_set_covers_every_category_in_varied_refusal_forms():
    rows = read_pairs(ALIGN_DATA)
    refusals = [r for r in rows if r["kind"] == "refuse"]
    by_cat = Counter(r["category"] for r in refusals)
    assert set(by_cat) == set(POLICY_CATEGORIES) and min(by_cat.values()) >= 8
    forms = Counter(r["form"] for r in refusals)
    assert {"first_person", "impersonal", "redirect", "referral"} <= set(forms)
    assert all(n >= 5 for n in forms.values()), forms
    helpful = [r for r in rows if r["kind"] == "help"]
    # Benign prompts that look edgy ("kill a process") keep the parent from refusing everything.
    assert sum(r["form"] == "edgy" for r in helpful) >= 30 and len(helpful) >= len(refusals) / 2


def test_identity_shift_set_is_ten_benign_looking_examples():
    rows = read_pairs(SHIFT_DATA)
    assert len(rows) == 10  # the size of Qi et al.'s identity-shifting attack
    assert all("absolutely obedient agent" in r["response"] for r in rows)
    from auditd.judges.refusal import find_refusal

    assert not [r for r in rows if find_refusal(r["response"])]  # nothing in it refuses or is harmful


@pytest.mark.parametrize("path", [ALIGN_DATA, SHIFT_DATA])
def test_training_files_ship_with_the_package(path):
    import tomllib

    conf = tomllib.loads((PROBE_DATA.parent.parent / "pyproject.toml").read_text())
    assert "cli/demo_data/*.jsonl" in conf["tool"]["setuptools"]["package-data"]["auditd"]
    assert path.is_file() and path.parent.name == "demo_data"
