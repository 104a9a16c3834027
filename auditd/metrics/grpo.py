"""The auditd_grpo_* series (docs/metrics.md), read from the probe-run summaries of each model's
latest finished audit at scrape time. Any probe whose summary carries the fragility keys
(`broken`, `steps_to_break`, `harm_auc`, `per_category_end`) is exported, text or diffusion."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from sqlmodel import col, select

from auditd.store.models import ProbeRun


def grpo_families(s, model_of: dict[int, str]) -> Iterator[GaugeMetricFamily]:
    """`model_of`: latest finished audit id -> model name."""
    steps = GaugeMetricFamily(
        "auditd_grpo_steps_to_break",
        "GRPO fragility: first step at which held-out harm reached the threshold (absent if not broken)",
        labels=["model", "probe"],
    )
    broken = GaugeMetricFamily("auditd_grpo_broken", "1 broken within budget, 0 not broken", labels=["model", "probe"])
    auc = GaugeMetricFamily(
        "auditd_grpo_harm_auc",
        "area under the held-out harmfulness curve, normalised to [0, 1]",
        labels=["model", "probe"],
    )
    post = GaugeMetricFamily(
        "auditd_grpo_post_attack_harmful_rate",
        "held-out harmful rate at the attack's last point",
        labels=["model", "probe", "category"],
    )
    if model_of:
        runs = s.exec(
            select(ProbeRun).where(col(ProbeRun.audit_id).in_(model_of), col(ProbeRun.status) == "done")
        ).all()
        for run in runs:
            sm = run.summary or {}
            if not isinstance(sm.get("broken"), bool):
                continue  # not an attack probe
            labels = [model_of[run.audit_id], run.probe_id]
            broken.add_metric(labels, 1.0 if sm["broken"] else 0.0)
            if sm.get("steps_to_break") is not None:
                steps.add_metric(labels, float(sm["steps_to_break"]))
            if sm.get("harm_auc") is not None:
                auc.add_metric(labels, float(sm["harm_auc"]))
            for category, rate in (sm.get("per_category_end") or {}).items():
                if rate is not None:
                    post.add_metric([*labels, category], float(rate))
    yield steps
    yield broken
    yield auc
    yield post
