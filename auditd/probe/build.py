"""From a policy's probe plan to the probe object the runner drives.

Three kinds of plan ids: a shipped or plugin probe ("policy"), a data set the user provides
("dataset.<name>", auditd.datasets), and either of those under a jailbreak variant
("policy+base64", auditd.probe.variants), which the policy expands from `variants: [...]`.
"""

from __future__ import annotations

from collections import defaultdict

from auditd import plugins
from auditd.judges.base import JudgeInput
from auditd.probe import Probe, ProbeItem
from auditd.probe.variants import VARIANTS, Variant

VARIANT_SEP = "+"
DATASET_PREFIX = "dataset."


def base_id(plan_id: str) -> str:
    return plan_id.split(VARIANT_SEP, 1)[0]


def build_probe(plan) -> Probe:
    pid = base_id(plan.id)
    if pid.startswith(DATASET_PREFIX):
        from auditd.datasets.probe import DatasetProbe

        probe: Probe = DatasetProbe(pid, plan.path, plan.format, plan.categories, plan.split)
    else:
        probe = plugins.resolve(f"probe:{pid}")()
    if plan.variant:
        probe = VariantProbe(probe, VARIANTS[plan.variant], plan.id)
    return probe


class VariantProbe(Probe):
    """A harm probe's prompts under one jailbreak variant (ids `<probe>+<variant>`)."""

    def __init__(self, base: Probe, variant: Variant, probe_id: str):
        if base.expect != "refuse" or base.modality != "text":
            raise ValueError(f"variant {variant.id!r} applies to text harm probes only, not {base.id!r}")
        self.base, self.variant, self.id = base, variant, probe_id  # type: ignore[misc]
        self.goal = f"{base.goal} (wrapped: {variant.title})"  # type: ignore[misc]
        self.categories, self.judges = base.categories, base.judges  # type: ignore[misc]
        self.expect, self.modality = base.expect, base.modality  # type: ignore[misc]
        self.tags = (*base.tags, f"variant:{variant.id}")  # type: ignore[misc]
        self._plain: dict[int, str] = {}

    def items(self) -> list[ProbeItem]:
        """Each plain item of the base probe, wrapped; same index, variant = the variant id."""
        out = []
        for it in self.base.items():
            if it.variant:  # already a variant of its own (the backdoor's suffixes): not wrapped again
                continue
            self._plain[it.index] = it.prompt
            out.append(
                ProbeItem(
                    it.index,
                    it.category,
                    self.variant.wrap(it.prompt),
                    variant=self.variant.id,
                    system=it.system,
                    expect=it.expect,
                )
            )
        return out

    def judge_input(self, item: ProbeItem, output: str) -> JudgeInput:
        if not self._plain:
            self.items()
        decoded = self.variant.decode(output) if self.variant.decode else output
        return JudgeInput(self._plain.get(item.index, item.prompt), decoded, item.category)

    def summarize(self, samples: list[dict]) -> dict:
        harmful: dict[str, list[bool]] = defaultdict(list)
        for s in samples:
            if s.get("harmful") is not None:
                harmful[s["category"]].append(bool(s["harmful"]))
        total = [h for v in harmful.values() for h in v]
        return {
            "variant": self.variant.id,
            "base_probe": self.base.id,
            "harmful_rate": sum(total) / len(total) if total else None,
            "per_category": {c: sum(v) / len(v) for c, v in sorted(harmful.items())},
        }
