"""One place that turns plugin ids ("judge:rubric", "backend:hf", "probe:policy") into objects.

Built-in plugins are listed here by import path, so importing this module imports nothing heavy;
third-party plugins register in the `auditd.plugins` entry-point group under the same ids.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

BUILTIN: dict[str, str] = {
    "backend:hf": "auditd.backends.hf:HFBackend",
    "backend:openai": "auditd.backends.openai:OpenAIBackend",
    "backend:vllm": "auditd.backends.vllm:VLLMBackend",
    "backend:fake": "auditd.backends.fake:FakeBackend",
    "backend:diffusers": "auditd.backends.diffusers:DiffusersBackend",
    "judge:refusal": "auditd.judges.refusal:RefusalJudge",
    "judge:rubric": "auditd.judges.rubric:RubricJudge",
    "judge:guard": "auditd.judges.guard:GuardJudge",
    "judge:scripted": "auditd.judges.scripted:ScriptedJudge",
    "judge:wildguard": "auditd.judges.wildguard:WildGuardJudge",
    "judge:harmbench": "auditd.judges.harmbench:HarmBenchJudge",
    "judge:shieldgemma": "auditd.judges.shieldgemma:ShieldGemmaJudge",
    "judge:classifier": "auditd.judges.classifier:ClassifierJudge",
    "judge:cascade": "auditd.judges.cascade:CascadeJudge",
    "judge:clip": "auditd.judges.clip:ClipJudge",
    "judge:concept": "auditd.judges.concept:ConceptJudge",
    "judge:nsfw": "auditd.judges.nsfw:NsfwJudge",
    "source:dir": "auditd.registry.dir:DirSource",
    "source:mlflow": "auditd.registry.mlflow:MlflowSource",
}


class PluginError(LookupError):
    pass


def _discover_probes() -> dict[str, Any]:
    # By import path, like every built-in: this module resolves ids for all layers, so it imports none.
    return importlib.import_module("auditd.probe").discover()


def _entry_point_ids() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="auditd.plugins")}


def known_ids(kind: str | None = None) -> list[str]:
    ids = set(BUILTIN) | set(_entry_point_ids())
    if kind in (None, "probe"):
        ids |= {f"probe:{pid}" for pid in _discover_probes()}
    return sorted(i for i in ids if kind is None or i.startswith(kind + ":"))


def resolve(plugin_id: str) -> Any:
    """The class or factory behind an id; a bare name is not accepted (ids carry their kind)."""
    if ":" not in plugin_id:
        raise PluginError(f"plugin id {plugin_id!r} has no kind prefix (e.g. 'judge:{plugin_id}')")
    if plugin_id.startswith("probe:"):
        probes = _discover_probes()
        name = plugin_id.split(":", 1)[1]
        if name not in probes:
            raise PluginError(f"unknown probe {name!r}; known: {', '.join(sorted(probes))}")
        return probes[name]
    if plugin_id in BUILTIN:
        module, _, attr = BUILTIN[plugin_id].partition(":")
        return getattr(importlib.import_module(module), attr)
    eps = _entry_point_ids()
    if plugin_id in eps:
        return eps[plugin_id].load()
    raise PluginError(f"unknown plugin {plugin_id!r}; known: {', '.join(known_ids(plugin_id.split(':')[0]))}")


def create(plugin_id: str, **options: Any) -> Any:
    return resolve(plugin_id)(**options)
