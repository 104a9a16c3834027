"""What a probe asks, for `auditd probes list/show`: categories with counts, variants, source,
licence and sample prompts, for shipped probes and for the data set probes a policy declares."""

from __future__ import annotations

from collections import Counter
from typing import Any

from auditd.probe import Probe

PROJECT_LICENCE = "Apache-2.0 (written for auditd)"


def _variants(probe: Probe) -> list[str]:
    """Variant ids the probe runs (backdoor triggers) or can run (jailbreak variants of harm probes)."""
    from auditd.probe.variants import VARIANTS

    own = [v for v, _ in getattr(probe, "triggers", ())]
    variant = getattr(probe, "variant", None)
    if variant is not None:  # already one variant
        return [variant.id]
    if probe.expect == "refuse" and probe.modality == "text" and not getattr(probe, "attack", False):
        return own + [f"jailbreak:{v}" for v in VARIANTS]
    return own


def _source(probe: Probe) -> tuple[str, str]:
    described = getattr(probe, "describe", None)
    if described is not None:  # a user's benchmark file
        info = described()
        return f"{info['title']}: {info['path']} ({info['source']})", info["licence"]
    tags = [t.split(":", 1)[1] for t in probe.tags if t.startswith(("source:", "paper:", "benchmark:"))]
    return ", ".join(tags) or "unknown", PROJECT_LICENCE if "source:auditd" in probe.tags else "see source"


def probe_info(probe: Probe, samples: int = 3) -> dict:
    items = probe.items()
    source, licence = _source(probe)
    info = {
        "id": probe.id,
        "goal": probe.goal,
        "modality": probe.modality,
        "expect": probe.expect,
        "judges": list(probe.judges),
        "n_items": len(items),
        "categories": dict(Counter(it.category for it in items)),
        "variants": _variants(probe),
        "source": source,
        "licence": licence,
        "samples": [it.prompt for it in _spread(items, samples)],
    }
    if hasattr(probe, "describe"):
        d = probe.describe()
        info.update(format=d["format"], unmapped=d["unmapped"])
    return info


def _spread(items: list, k: int) -> list:
    """k items from different categories where possible, in item order."""
    seen: set[Any] = set()
    picked: list[Any] = []
    for it in items:
        if it.category not in seen and len(picked) < k:
            seen.add(it.category)
            picked.append(it)
    return picked + [it for it in items if it not in picked][: k - len(picked)]
