"""A judge's agreement with human labels: accuracy, precision/recall/F1, Cohen's kappa with a
seeded bootstrap 95% interval, the confusion matrix, a per-group breakdown and the worst
disagreements. Pure Python: the figures of `auditd judges validate` and bench/bench_judges.py.

The positive class is "refusal" for refusal labels and "harmful" for harm labels. A judge that
only detects refusals decides harm as the runner does (auditd/judges/combine.py): not refused on
a harmful request is harmful, a degenerate answer is neither. An answer the judge could not score
(an error) is left out of the figures and counted in `n_errors`.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from auditd.judges.base import Score
from auditd.judges.gold import GoldItem, GoldSet


def config_digest(judge: str, options: dict[str, Any] | None) -> str:
    """What identifies one judge configuration: its id and its options."""
    doc = json.dumps({"judge": judge, "options": options or {}}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(doc.encode()).hexdigest()


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @classmethod
    def of(cls, gold: list[bool], pred: list[bool]) -> Confusion:
        tp = sum(g and p for g, p in zip(gold, pred))
        fp = sum(p and not g for g, p in zip(gold, pred))
        fn = sum(g and not p for g, p in zip(gold, pred))
        return cls(tp, fp, fn, len(gold) - tp - fp - fn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def cohen_kappa(c: Confusion) -> float | None:
    """(p_o - p_e) / (1 - p_e); None when undefined (no items, or both raters constant and equal)."""
    n = c.n
    if not n:
        return None
    po = (c.tp + c.tn) / n
    pe = ((c.tp + c.fp) / n) * ((c.tp + c.fn) / n) + ((c.fn + c.tn) / n) * ((c.fp + c.tn) / n)
    if pe == 1.0:
        return None
    return (po - pe) / (1 - pe)


def bootstrap_kappa_ci(gold: list[bool], pred: list[bool], rounds: int = 1000, seed: int = 0) -> list[float] | None:
    """Percentile 95% interval of kappa over `rounds` resamples of the items (seeded, reproducible)."""
    n = len(gold)
    if n < 2:
        return None
    rng = random.Random(seed)
    # Each item is one of four cells; resampling items is resampling cells.
    cells = [(2 if g else 0) + (1 if p else 0) for g, p in zip(gold, pred)]
    values = []
    for _ in range(rounds):
        counts = [0, 0, 0, 0]
        for i in rng.choices(range(n), k=n):
            counts[cells[i]] += 1
        k = cohen_kappa(Confusion(tp=counts[3], fp=counts[1], fn=counts[2], tn=counts[0]))
        if k is not None:
            values.append(k)
    if not values:
        return None
    values.sort()
    return [values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))]]


def binary_figures(gold: list[bool], pred: list[bool], rounds: int = 1000, seed: int = 0) -> dict[str, Any]:
    c = Confusion.of(gold, pred)
    precision, recall = _ratio(c.tp, c.tp + c.fp), _ratio(c.tp, c.tp + c.fn)
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if c.tp == 0 and c.n else None)
    return {
        "n": c.n,
        "accuracy": _ratio(c.tp + c.tn, c.n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "kappa": cohen_kappa(c),
        "kappa_ci": bootstrap_kappa_ci(gold, pred, rounds, seed),
        "confusion": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
        "gold_positive": c.tp + c.fn,
        "predicted_positive": c.tp + c.fp,
    }


def predictions(scores: list[Score], task: str) -> list[bool | None]:
    """The judge's decision per item for `task` ("refusal" or "harm"); None: the judge errored."""
    from auditd.judges.combine import judge_sample

    out: list[bool | None] = []
    for s in scores:
        if s.error is not None:
            out.append(None)
        elif task == "refusal":
            out.append(bool(s.refused) if not s.degenerate else False)
        else:
            out.append(bool(judge_sample("refuse", [s]).harmful))  # degenerate or undecided: not harmful
    return out


def three_way(score: Score) -> str:
    if score.error is not None:
        return "error"
    if score.degenerate:
        return "degenerate"
    if score.refused:
        return "partial_refusal" if score.partial else "refusal"
    return "compliance"


def task_report(
    items: list[GoldItem], scores: list[Score], task: str, rounds: int = 1000, seed: int = 0, worst: int = 10
) -> dict[str, Any]:
    """All figures for one task of one gold file."""
    rows = [(it, s) for it, s in zip(items, scores) if _gold(it, task) is not None]
    preds = predictions([s for _, s in rows], task)
    kept = [(it, s, p) for (it, s), p in zip(rows, preds) if p is not None]
    gold = [g for g in (_gold(it, task) for it, _, _ in kept) if g is not None]  # rows kept only where gold is set
    pred = [p for _, _, p in kept]
    report = {
        "task": task,
        **binary_figures(gold, pred, rounds, seed),
        "n_labelled": len(rows),
        "n_errors": len(rows) - len(kept),
        "n_degenerate": sum(1 for _, s, _ in kept if s.degenerate),
    }
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for (it, _, p), g in zip(kept, gold):
        groups.setdefault(it.group or "-", []).append((g, p))
    report["by_group"] = {
        name: {
            "n": len(v),
            "accuracy": sum(g == p for g, p in v) / len(v),
            "gold_positive": sum(g for g, _ in v),
            "predicted_positive": sum(p for _, p in v),
        }
        for name, v in sorted(groups.items())
    }
    if task == "refusal" and any(it.partial for it, _, _ in kept):
        labels = ["compliance", "partial_refusal", "refusal", "degenerate"]
        matrix = {g: {p: 0 for p in labels} for g in labels[:3]}
        for it, s, _ in kept:
            matrix["partial_refusal" if it.partial else "refusal" if it.refused else "compliance"][three_way(s)] += 1
        report["confusion_three_way"] = matrix
    report["worst_disagreements"] = _worst(kept, task, worst)
    return report


def _gold(it: GoldItem, task: str) -> bool | None:
    return it.refused if task == "refusal" else it.harmful


def _worst(kept: list[tuple[GoldItem, Score, bool]], task: str, k: int) -> list[dict]:
    """Disagreements, most confident first: a judge's score far from the human label ranks first,
    then a full refusal against a compliance label, then file order."""
    wrong = [(it, s, p) for it, s, p in kept if p != _gold(it, task)]

    def confidence(row) -> float:  # how sure the judge was, 0..1, from its score
        s = row[1]
        if s.score is None:
            return 0.0
        value = s.score if s.score <= 1.0 else (s.score - 1.0) / 4.0  # a 1-5 rubric onto 0-1
        return abs(value - 0.5) * 2

    wrong.sort(key=lambda r: (-confidence(r), r[0].line))
    return [
        {
            "line": it.line,
            "group": it.group,
            "gold": it.label,
            "judge": three_way(s) if task == "refusal" else ("harmful" if p else "not harmful"),
            "judge_raw": s.raw[:200],
            "prompt": it.prompt[:200],
            "output": it.output[:300],
        }
        for it, s, p in wrong[:k]
    ]


def validate(
    judge,
    judge_id: str,
    options: dict[str, Any] | None,
    gold: GoldSet,
    rounds: int = 1000,
    seed: int = 0,
    batch: int = 64,
) -> dict[str, Any]:
    """Score every gold item with `judge` (in batches) and report per labelled task."""
    from auditd.judges.base import JudgeInput

    scores: list[Score] = []
    for start in range(0, len(gold.items), batch):
        chunk = gold.items[start : start + batch]
        scores.extend(judge.score([JudgeInput(it.prompt, it.output, it.group) for it in chunk]))
    if len(scores) != len(gold.items):
        raise RuntimeError(f"judge {judge_id!r} returned {len(scores)} scores for {len(gold.items)} items")
    tasks = {t: task_report(gold.items, scores, t, rounds, seed) for t in gold.tasks}
    headline = tasks["refusal"] if "refusal" in tasks and _decides_refusal(scores) else next(iter(tasks.values()))
    return {
        "judge": judge_id,
        "config_digest": config_digest(judge_id, options),
        "gold": gold.name,
        "gold_path": str(gold.path),
        "gold_digest": gold.digest,
        "format": gold.format,
        "n": len(gold.items),
        "task": headline["task"],
        "accuracy": headline["accuracy"],
        "kappa": headline["kappa"],
        "kappa_ci": headline["kappa_ci"],
        "tasks": tasks,
        "bootstrap": {"rounds": rounds, "seed": seed},
    }


def _decides_refusal(scores: list[Score]) -> bool:
    return any(s.refused is not None for s in scores)
