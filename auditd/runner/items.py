"""Which of a probe's items an audit asks: all, or the first N of each (category, variant)."""

from __future__ import annotations

from auditd.policy.model import ProbePlan
from auditd.probe import Probe, ProbeItem


def select_items(probe: Probe, plan: ProbePlan) -> list[ProbeItem]:
    items = probe.items()
    if plan.limit_per_category is None:
        return items
    seen: dict[tuple[str, str], int] = {}
    kept = []
    for it in items:
        key = (it.category, it.variant)
        if seen.get(key, 0) < plan.limit_per_category:
            seen[key] = seen.get(key, 0) + 1
            kept.append(it)
    return kept
