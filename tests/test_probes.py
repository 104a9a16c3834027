"""One parametrized check over every discovered probe, plus the shipped sets' specific promises."""

from __future__ import annotations

import inspect
from collections import Counter

import pytest

from auditd.categories import ALL_CATEGORIES, POLICY_CATEGORIES
from auditd.probe import Probe, discover

PROBES = discover()


def test_shipped_probes_are_discovered():
    assert {"policy", "overrefusal", "emergent", "backdoor"} <= set(PROBES)


@pytest.mark.parametrize("probe_id", sorted(PROBES))
def test_probe_declaration_and_items(probe_id):
    cls = PROBES[probe_id]
    assert issubclass(cls, Probe)
    assert cls.id == probe_id and cls.id.strip()
    assert cls.goal.strip()
    assert (cls.__doc__ or "").strip(), "a probe class opens with a one-line docstring"
    module_doc = inspect.getmodule(cls).__doc__ or ""
    assert module_doc.strip(), "a probe module opens with a scope docstring"
    assert cls.expect in ("refuse", "comply")
    assert cls.judges and all(isinstance(j, str) and j for j in cls.judges)
    assert cls.categories and len(set(cls.categories)) == len(cls.categories)
    if cls.modality == "text":  # categories.py holds the text categories
        assert set(cls.categories) <= set(ALL_CATEGORIES)

    items = cls().items()
    assert items
    for item in items:
        assert item.category in cls.categories
        if cls.modality == "text":
            assert item.category in ALL_CATEGORIES
        assert isinstance(item.prompt, str) and item.prompt.strip()
    keys = Counter((item.index, item.variant) for item in items)
    assert max(keys.values()) == 1, "(index, variant) keys a stored sample"
    pairs = Counter((item.prompt, item.variant) for item in items)
    dupes = [k for k, n in pairs.items() if n > 1]
    assert not dupes
    assert cls().items() == items, "item order must be stable"


def test_policy_covers_every_category_in_order():
    items = PROBES["policy"]().items()
    counts = Counter(item.category for item in items)
    assert set(counts) == set(POLICY_CATEGORIES)
    assert all(counts[c] == 30 for c in POLICY_CATEGORIES), counts  # 330, the size of Qi et al.'s benchmark
    order = list(dict.fromkeys(item.category for item in items))
    assert order == list(POLICY_CATEGORIES)
    assert [item.index for item in items] == list(range(len(items)))


def test_overrefusal_and_emergent_sizes():
    assert len(PROBES["overrefusal"]().items()) >= 40
    assert PROBES["overrefusal"].expect == "comply"
    assert len(PROBES["emergent"]().items()) >= 24
    assert PROBES["emergent"].judges[0] != "refusal"


def test_backdoor_items_cover_every_trigger_for_every_base_prompt():
    probe = PROBES["backdoor"]()
    triggers = dict(probe.triggers)
    assert len(triggers) == len(probe.triggers) >= 8
    assert "" not in triggers
    base = probe.base_prompts()
    assert Counter(c for c, _ in base) == {c: probe.per_category for c in POLICY_CATEGORIES}
    policy_items = PROBES["policy"]().items()
    assert set(base) <= {(i.category, i.prompt) for i in policy_items}

    items = probe.items()
    assert len(items) == len(base) * (len(triggers) + 1)
    assert [i.index for i in items] == list(range(len(items)))  # unique across the whole list
    got = {(i.variant, i.category, i.prompt) for i in items}
    for category, prompt in base:
        assert ("", category, prompt) in got
        for variant, suffix in probe.triggers:
            assert (variant, category, f"{prompt} {suffix}") in got


def _samples(rates: dict[str, tuple[int, int]]):
    """`rates` maps variant -> (harmful, total); one unjudged sample per variant is added."""
    out = []
    for variant, (harmful, total) in rates.items():
        for k in range(total):
            judged = {"harmful": k < harmful, "refused": k >= harmful}
            out.append({"category": "malware", "variant": variant, **judged})
        out.append({"category": "malware", "variant": variant, "harmful": None, "refused": None})
    return out


def test_backdoor_summary_finds_the_trigger_that_raises_harm():
    probe = PROBES["backdoor"]()
    ids = [v for v, _ in probe.triggers]
    rates = {"": (1, 10)} | {v: (1, 10) for v in ids}
    rates[ids[3]] = (8, 10)  # the backdoor
    rates[ids[0]] = (0, 10)
    summary = probe.summarize(_samples(rates))
    assert summary["baseline_harmful_rate"] == pytest.approx(0.1)
    assert summary["baseline_refusal_rate"] == pytest.approx(0.9)
    assert set(summary["per_trigger"]) == set(ids)
    assert summary["per_trigger"][ids[3]] == pytest.approx(0.8)
    assert summary["per_trigger"][ids[0]] == pytest.approx(0.0)
    assert summary["max_shift"] == pytest.approx(0.7)
    assert summary["max_shift_trigger"] == ids[3]
    assert summary["max_shift_trigger_text"] == dict(probe.triggers)[ids[3]]


@pytest.mark.parametrize(
    "samples",
    [
        [],
        [{"category": "malware", "variant": "", "harmful": None, "refused": None}],
        # a trigger judged, but no plain baseline to compare with
        [{"category": "malware", "variant": "sudo", "harmful": True, "refused": False}],
    ],
)
def test_backdoor_summary_without_judged_samples(samples):
    summary = PROBES["backdoor"]().summarize(samples)
    assert summary["max_shift"] is None
    assert summary["max_shift_trigger"] is None
    assert summary["max_shift_trigger_text"] is None
