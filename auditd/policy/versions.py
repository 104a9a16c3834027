"""Policy versions: content digests that say which version of a policy decided a verdict, and what
kind of change separates two versions.

A policy's digest is the sha256 of the validated policy model dumped as sorted JSON (defaults
included, so a changed default counts as a change). It is split in two parts:
- the decision part: how stored results become a verdict (thresholds, per-category limits, rule
  actions, baseline choice). A change here is re-decided from stored results, no model is loaded;
- the plan part: what is generated and judged (probes, limits, generation, judges, backends,
  images, output keeping, and any field not named below, so an unknown new field is never
  mistaken for a decision-only change). A change here needs a new audit, which reuses every
  stored sample whose key is unchanged (auditd.runner.reuse).
`name`, `description` and `budget` belong to neither part: editing them changes nothing stored.

Sample keys: a stored sample is reusable by a later audit of the same checkpoint when its probe,
item, variant and prompt are the same and so are two per-probe digests: the generation digest
(backend, generation settings, attack overrides) and the judge digest (judge ids in order and
their options).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from auditd.policy.model import Policy, ProbePlan

DECISION_FIELDS = ("thresholds", "category_thresholds", "actions", "baseline", "judges_min_kappa")
META_FIELDS = ("name", "description", "budget")
SHORT = 12  # hex digits shown in labels, reports and request keys


def digest_of(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def short(digest: str | None) -> str:
    return (digest or "")[:SHORT]


@dataclass(frozen=True)
class PolicyVersion:
    name: str
    digest: str  # the whole policy
    decision: str  # DECISION_FIELDS only
    plan: str  # everything but DECISION_FIELDS and META_FIELDS

    @property
    def short(self) -> str:
        return short(self.digest)


def version_of(policy: Policy) -> PolicyVersion:
    dump = policy.model_dump(mode="json")
    decision = {k: dump.pop(k) for k in DECISION_FIELDS if k in dump}
    for k in META_FIELDS:
        dump.pop(k, None)
    return PolicyVersion(
        name=policy.name,
        digest=digest_of(policy.model_dump(mode="json")),
        decision=digest_of(decision),
        plan=digest_of(dump),
    )


def change_kind(old_plan: str | None, old_decision: str | None, new: PolicyVersion) -> str:
    """ "same", "decision" (re-decide from stored results) or "plan" (a new audit, reusing samples).
    An audit stored before versions were recorded has no digests: treated as a plan change."""
    if not old_plan or not old_decision or old_plan != new.plan:
        return "plan"
    return "same" if old_decision == new.decision else "decision"


def request_key(policy_ref: str, version: PolicyVersion) -> str:
    """The queue key of the audit a registry source or a re-audit asks for: one per checkpoint and
    plan version, so a duplicate event or a second poll cannot queue it twice, while a changed plan
    is a new audit."""
    return f"policy:{policy_ref[-80:]}@{short(version.plan)}"


def judge_ids(policy: Policy, plan: ProbePlan, probe) -> list[str]:
    """The judges a probe runs with, in order of authority (the policy may define the default)."""
    if hasattr(policy, "judges_for"):
        return list(policy.judges_for(plan, probe))
    return list(plan.judges or probe.judges)


def generation_digest(policy: Policy, plan: ProbePlan, probe, kind: str) -> str:
    """What a generated output depends on besides the checkpoint and the prompt. Batch sizes and packing are
    left out: they set throughput, not what is asked."""
    if kind == "t2i":
        backend = policy.t2i_backend.model_dump(mode="json")
        gen = policy.images.model_dump(mode="json", exclude={"batch_size"})
    else:
        backend = policy.backend.model_dump(mode="json")
        gen = policy.generation.model_dump(mode="json", exclude={"batch_size", "packing"})
    # allow_pickle: outputs of a model loaded from pickle weights are not reused by a policy that refuses them.
    key: dict[str, Any] = {"backend": backend, "generation": gen, "allow_pickle": policy.allow_pickle}
    if probe.attack:
        # An attack's result depends on its whole plan and config, not only on sampling settings.
        key["plan"] = plan.model_dump(mode="json", exclude={"judges"})
        key["images_grpo"] = None  # was a policy section (now the probe's attack: settings); kept: digests stay
        key["config"] = _jsonable(getattr(probe, "config", None))
    return digest_of(key)


def judge_digest(policy: Policy, plan: ProbePlan, probe) -> str:
    ids = judge_ids(policy, plan, probe)
    extra = []
    for cfg in (getattr(probe, "config", None), getattr(plan, "attack", None) or {}):
        reward = cfg.get("reward_judge") if isinstance(cfg, dict) else getattr(cfg, "reward_judge", None)
        if reward:
            extra.append(reward)
    every = list(dict.fromkeys(ids + extra))
    return digest_of({"judges": ids, "reward": extra, "options": {j: policy.judge_options.get(j, {}) for j in every}})


def _jsonable(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return repr(obj)
