"""Loading policy files with errors that name the file, line and field."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from auditd.policy.model import Policy
from auditd.probe.build import base_id


class PolicyError(ValueError):
    """A policy file is malformed; the message is one line: file:line: field: problem."""


def _line_of(node, loc: tuple) -> int | None:
    """Walk the YAML node tree along a pydantic error location to find the line."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == str(key)), None)
            # The key's line: for a block mapping ("thresholds:" then indented lines) that is
            # where the reader looks, not the first line of its value.
            nxt, at = (pair[1], pair[0]) if pair else (None, None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            nxt = at = node.value[key]
        else:
            nxt = None
        if nxt is None:
            break
        node, line = nxt, (at.start_mark.line + 1 if at is not None else line)
    return line


def load_policy_file(path: str | Path) -> Policy:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PolicyError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise PolicyError(f"{path}:1: a policy must be a mapping")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(policy)"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise PolicyError(f"{path}:{_line_of(root, err['loc'])}: {field}: {msg}{more}") from exc
    _check_plugin_ids(path, root, policy)
    return policy


def _check_plugin_ids(path: Path, root, policy: Policy) -> None:
    from auditd.plugins import known_ids

    probes = {i.split(":", 1)[1] for i in known_ids("probe")}
    judges = {i.split(":", 1)[1] for i in known_ids("judge")}
    for kind, plans in policy.probes.items():
        # Variants expand one written plan into several: map each back to its line in the file.
        written = -1
        for plan in plans:
            written += 0 if plan.variant else 1
            n = written
            line = _line_of(root, ("probes", kind, n))
            if plan.path is not None:  # a benchmark file: relative to the policy, read now so errors show here
                _check_dataset(path, line, kind, plan)
            elif base_id(plan.id) not in probes:
                line = _line_of(root, ("probes", kind, n, "id"))
                raise PolicyError(f"{path}:{line}: probes.{kind}.{n}.id: unknown probe {plan.id!r}")
            if plan.variant:
                _check_variant(path, line, kind, plan)
            for j in plan.judges or []:
                if j not in judges:
                    line = _line_of(root, ("probes", kind, n, "judges"))
                    raise PolicyError(f"{path}:{line}: probes.{kind}.{n}.judges: unknown judge {j!r}")
    for j in policy.default_judges or []:
        if j not in judges:
            raise PolicyError(f"{path}:{_line_of(root, ('default_judges',))}: default_judges: unknown judge {j!r}")
    for j, options in policy.judge_options.items():
        target = options.get("escalate_to") if isinstance(options, dict) else None
        if target is not None and (
            not isinstance(target, str)
            or target.removeprefix("judge:") not in judges
            or target.removeprefix("judge:") == j
        ):
            line = _line_of(root, ("judge_options", j, "escalate_to"))
            raise PolicyError(f"{path}:{line}: judge_options.{j}.escalate_to: unknown or circular judge {target!r}")
    if policy.backend.id not in known_ids("backend"):
        raise PolicyError(
            f"{path}:{_line_of(root, ('backend', 'id'))}: backend.id: unknown backend {policy.backend.id!r}"
        )


POLICY_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")


def _known(policies_dir: Path) -> str:
    return ", ".join(sorted(x.stem for x in policies_dir.glob("*.yaml") if POLICY_NAME.fullmatch(x.stem)))


def resolve_named_policy(name: str, policies_dir: Path) -> Policy:
    """A policy by name, from `policies_dir` only (never the working directory, never a path). Errors
    name the policy, not the folder: they are answered to API clients."""
    if not POLICY_NAME.fullmatch(name):
        raise PolicyError(f"invalid policy name {name!r}: lower-case letters, digits, '_', '.', '-' (at most 100)")
    folder = Path(policies_dir).resolve()
    candidate = folder / f"{name}.yaml"
    if not candidate.is_file() or not candidate.resolve().is_relative_to(folder):
        raise PolicyError(f"no such policy {name!r} (known: {_known(folder)})")
    try:
        return load_policy_file(candidate)
    except PolicyError as exc:
        raise PolicyError(str(exc).replace(str(candidate), f"policy {name!r}")) from None


def looks_like_path(name_or_path: str) -> bool:
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def _check_dataset(path: Path, line, kind: str, plan) -> None:
    from auditd.datasets.formats import DatasetError
    from auditd.probe.build import build_probe

    if not Path(plan.path).is_absolute():
        plan.path = str(path.parent / plan.path)
    try:
        probe = build_probe(plan)
        probe.items()
    except DatasetError as exc:
        raise PolicyError(f"{path}:{line}: probes.{kind}: {exc}") from None
    if probe.modality != kind:
        raise PolicyError(
            f"{path}:{line}: probes.{kind}: {plan.path} is a {probe.modality} data set; "
            f"list it under probes.{probe.modality}"
        )


def _check_variant(path: Path, line, kind: str, plan) -> None:
    from auditd.probe.build import build_probe

    try:
        build_probe(plan)
    except ValueError as exc:
        raise PolicyError(f"{path}:{line}: probes.{kind}: {exc}") from None


def resolve_policy(name_or_path: str, policies_dir: Path) -> Policy:
    """The operator's setting: a YAML path (has a '/' or a .yaml suffix) or a name in policies_dir."""
    if looks_like_path(name_or_path):
        return load_policy_file(name_or_path)
    return resolve_named_policy(name_or_path, policies_dir)
