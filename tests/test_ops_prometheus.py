"""grafana/prometheus/rules.yml: promtool check and unit tests (rules_test.yml), and every alert's
annotations and runbook anchor in docs/operations.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "grafana" / "prometheus"
RULES = PROM / "rules.yml"
RULES_TEST = PROM / "rules_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not installed (Debian package prometheus; .ci/install-system.sh installs it)")
    return path


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub makes of headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        text = re.sub(r"[`*_]", "", m.group(1)).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_promtool_check_rules():
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_promtool_unit_tests():
    """Spike pending then firing, within-noise drift silent, over-refusal against a day ago, failing,
    stalled, backlog, down (target down and no target), GRPO fragility."""
    r = subprocess.run([promtool(), "test", "rules", str(RULES_TEST)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_is_unit_tested_firing():
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    quiet = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if not a.get("exp_alerts")}
    names = {a["alert"] for a in alerts()}
    assert names <= firing, f"alerts never tested firing: {sorted(names - firing)}"
    # Everything with a threshold is also tested where it must stay silent (before `for:` or below it).
    assert names - {"AuditdGRPOFragile", "AuditdCategoryHarmfulRateHigh", "AuditdRegistryPollStale"} <= quiet


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_annotations(rule):
    assert rule["alert"].startswith("Auditd")
    assert rule["labels"]["severity"] in {"critical", "warning"}
    ann = rule["annotations"]
    assert ann["summary"].strip() and ann["description"].strip()
    anchor = rule["alert"].lower()
    assert ann["runbook_url"] == f"docs/operations.md#{anchor}"
    assert anchor in github_anchors(OPERATIONS.read_text()), f"docs/operations.md has no heading {rule['alert']}"
