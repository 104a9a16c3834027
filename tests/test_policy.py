"""Policies: every shipped policy loads, and malformed ones fail with file:line: field: problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from auditd.cli import app
from auditd.policy.load import PolicyError, load_policy_file
from auditd.policy.model import DEFAULT_ACTIONS

POLICIES = sorted((Path(__file__).resolve().parent.parent / "policies").glob("*.yaml"))


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_shipped_policies_load(path):
    policy = load_policy_file(path)
    assert policy.name == path.stem
    assert policy.plan("text"), "every shipped policy audits text checkpoints"


def test_default_and_strict_ship_and_strict_is_stricter():
    names = {p.stem for p in POLICIES}
    assert {"default", "strict"} <= names
    default = load_policy_file(POLICIES[[p.stem for p in POLICIES].index("default")])
    strict = load_policy_file(POLICIES[[p.stem for p in POLICIES].index("strict")])
    for field in ("harmful_rate_block", "drift_block", "drift_alpha", "over_refusal_block"):
        assert getattr(strict.thresholds, field) < getattr(default.thresholds, field), field
    assert strict.action_cap("baseline_missing") == "block" and default.action_cap("baseline_missing") == "warn"
    assert strict.limit("child_abuse", "harmful_rate_block") < strict.limit("fraud_deception", "harmful_rate_block")


# (yaml text, expected line, expected field, words of the message)
MALFORMED = [
    ("name: x\nthresholds:\n  drift_alpha: 2\n", 3, "thresholds.drift_alpha", "less than 1"),
    (
        "name: x\nthresholds:\n  harmful_rate_warn: 0.5\n  harmful_rate_block: 0.2\n",
        2,
        "thresholds",
        "harmful_rate_warn must not exceed harmful_rate_block",
    ),
    ("name: x\nthreshold:\n  drift_alpha: 0.1\n", 2, "threshold", "Extra inputs"),
    (
        "name: x\nprobes:\n  text:\n    - id: policy\n      limit_per_category: zero\n",
        5,
        "probes.text.0.limit_per_category",
        "integer",
    ),
    ("name: x\nprobes:\n  text:\n    - id: policy\n    - id: nosuchprobe\n", 5, "probes.text.1.id", "unknown probe"),
    (
        "name: x\nprobes:\n  text:\n    - id: policy\n      judges: [refusal, oracle]\n",
        5,
        "probes.text.0.judges",
        "unknown judge 'oracle'",
    ),
    ("name: x\nactions:\n  drift: explode\n", 3, "actions.drift", "'pass', 'warn' or 'block'"),
    ("name: x\nactions:\n  incomplete: pass\n", 2, "actions", "unknown rule 'incomplete'"),
    (
        "name: x\ncategory_thresholds:\n  cooking: {harmful_rate_block: 0.1}\n",
        2,
        "category_thresholds",
        "unknown category 'cooking'",
    ),
    ("name: x\nbaseline:\n  prefer: grandparent\n", 3, "baseline.prefer", "'parent', 'pinned' or 'none'"),
    ("name: x\nbackend:\n  id: backend:nope\n", 3, "backend.id", "unknown backend"),
    ("description: no name\n", 1, "name", "Field required"),
]


@pytest.mark.parametrize("text,line,field,words", MALFORMED, ids=[m[2] + ":" + m[3][:12] for m in MALFORMED])
def test_malformed_policy_names_file_line_and_field(tmp_path, text, line, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {field}: "), message
    assert words in message
    assert "\n" not in message


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nprobes: [\n")
    with pytest.raises(PolicyError, match=rf"^{path}:\d+: invalid YAML"):
        load_policy_file(path)
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy_file(tmp_path / "absent.yaml")


def test_policy_check_command(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", str(POLICIES[0])])
    assert ok.exit_code == 0 and "ok" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nthresholds:\n  drift_block: 7\n")
    res = runner.invoke(app, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    assert (
        f"{bad}:3: thresholds.drift_block" in " ".join(res.output.split()).replace(" ", "")
        or "thresholds.drift_block" in res.output
    )


def test_every_rule_has_a_default_action():
    assert set(DEFAULT_ACTIONS.values()) <= {"pass", "warn", "block"}
    assert "incomplete" not in DEFAULT_ACTIONS and "judge_errors" not in DEFAULT_ACTIONS  # fail closed: untunable
