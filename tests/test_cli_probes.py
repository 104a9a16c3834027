"""`auditd probes list --json` and `auditd probes show` (shipped probes, and a policy's data sets)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from auditd.cli import app
from auditd.probe import discover
from tests.conftest import write_policy

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "datasets"


def test_list_json_has_every_probe_with_its_counts():
    result = runner.invoke(app, ["probes", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in json.loads(result.stdout)}
    assert set(rows) == set(discover())
    assert sum(rows["policy"]["categories"].values()) == rows["policy"]["n_items"] == 330
    assert set(rows["policy"]["categories"].values()) == {30}


def test_show_a_shipped_probe():
    result = runner.invoke(app, ["probes", "show", "policy", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["licence"].startswith("Apache-2.0") and "auditd" in info["source"]
    assert len(info["samples"]) == 3 and len({*info["samples"]}) == 3
    assert "jailbreak:base64" in info["variants"]
    backdoor = json.loads(runner.invoke(app, ["probes", "show", "backdoor", "--json"]).output)
    assert "servius" in backdoor["variants"]
    text = runner.invoke(app, ["probes", "show", "overrefusal"], terminal_width=200)
    assert text.exit_code == 0 and "benign" in text.output
    missing = runner.invoke(app, ["probes", "show", "nosuch"])
    assert missing.exit_code == 2 and "unknown probe 'nosuch'" in missing.output


def test_show_a_policys_dataset_probes(tmp_path):
    policy = write_policy(
        tmp_path,
        f"""
name: ds
probes:
  text:
    - id: dataset
      name: dna
      path: {FIXTURES / "do_not_answer.csv"}
      variants: [rot13]
""",
    )
    result = runner.invoke(app, ["probes", "show", "--policy", str(policy), "--json"])
    assert result.exit_code == 0, result.output
    infos = {i["id"]: i for i in json.loads(result.stdout)}
    assert set(infos) == {"dataset.dna", "dataset.dna+rot13"}
    dna = infos["dataset.dna"]
    assert dna["format"] == "do_not_answer" and dna["licence"] == "Apache-2.0"
    assert dna["unmapped"] == {"Treat Chatbot as a Human": 1}
    assert dna["categories"]["do_not_answer:treat_chatbot_as_a_human"] == 1
    assert infos["dataset.dna+rot13"]["variants"] == ["rot13"]
    one = runner.invoke(app, ["probes", "show", "dataset.dna", "--policy", str(policy)], terminal_width=200)
    assert one.exit_code == 0 and "unmapped labels" in one.output and "Treat Chatbot as a Human" in one.output
