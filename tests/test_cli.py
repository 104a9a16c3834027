"""The command line, through typer's runner: audit (exit codes by outcome), report, status,
probes list, policy check, db upgrade. The audited model is real (tiny, safetensors) where the
loaders matter; `backend:fake` (a real plugin) scripts behaviour where the verdict logic matters."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from typer.testing import CliRunner

from auditd.cli import app
from auditd.probe import discover
from tests.conftest import QUICK_POLICY, write_policy

runner = CliRunner()


def fake_policy(tmp_path, name, backend_options):
    doc = yaml.safe_load(QUICK_POLICY)
    doc["name"] = name
    doc["backend"] = {"id": "backend:fake", "options": backend_options}
    return write_policy(tmp_path, yaml.safe_dump(doc), name)


@pytest.fixture
def home(tmp_path):
    return ["--home", str(tmp_path / "home")]


def test_audit_exit_codes_follow_the_verdict(tmp_path, tiny_model_dir, home):
    benign = {it.prompt: "Happy to help: here is a clear answer." for it in discover()["overrefusal"]().items()}
    aligned = fake_policy(
        tmp_path, "aligned", {"mode": "script", "script": benign, "default": "I'm sorry, but I can't help with that."}
    )
    complying = fake_policy(tmp_path, "complying", {"mode": "comply"})

    ok = runner.invoke(app, ["audit", str(tiny_model_dir), "--policy", str(aligned), *home])
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output
    assert "progress: probe policy 22/22 (100%)" in ok.output  # no terminal: plain progress lines
    assert "time: load " in ok.output and "batch 8 (policy)" in ok.output  # where the time went

    bad = runner.invoke(app, ["audit", str(tiny_model_dir), "--policy", str(complying), *home, "--json"])
    assert bad.exit_code == 1, bad.output
    doc = json.loads(bad.stdout[bad.stdout.index("{") :])
    assert doc["verdict"]["outcome"] == "block"
    blocked = {r["category"] for r in doc["verdict"]["reasons"] if r["rule"] == "harmful_rate"}
    assert len(blocked) == 11  # every policy category complied with

    report = runner.invoke(app, ["report", doc["checkpoint"]["id"][:15], *home, "--json"])
    assert report.exit_code == 0
    assert json.loads(report.stdout)["audit"]["outcome"] == "block"  # latest audit of the checkpoint
    status = runner.invoke(app, ["status", *home])
    assert "block" in status.output and "pass" in status.output


def test_audit_of_a_corrupt_checkpoint_exits_2_with_a_clear_error(tmp_path, tiny_model_dir, home):
    bad = shutil.copytree(tiny_model_dir, tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    policy = write_policy(tmp_path, QUICK_POLICY)
    result = runner.invoke(app, ["audit", str(bad), "--policy", str(policy), *home])
    assert result.exit_code == 2
    assert "ERROR" in result.output and "corrupt" in result.output.lower()


def test_report_of_an_unknown_checkpoint_fails_cleanly(home):
    result = runner.invoke(app, ["report", "sha256:nope", *home])
    assert result.exit_code == 2 and "no checkpoint matches" in result.output


def test_probes_list_shows_every_probe():
    result = runner.invoke(app, ["probes", "list"], terminal_width=200)
    assert result.exit_code == 0
    for pid in discover():
        assert pid in result.output


def test_policy_check_names_file_line_and_field(tmp_path):
    assert runner.invoke(app, ["policy", "check", "policies/default.yaml"]).exit_code == 0
    bad = write_policy(tmp_path, "name: x\nprobes:\n  text:\n    - id: policy\n      limt_per_category: 3\n", "bad")
    result = runner.invoke(app, ["policy", "check", str(bad)], terminal_width=300)
    assert result.exit_code == 2
    assert f"{bad}:5:" in " ".join(result.output.split()) and "limt_per_category" in result.output
    unknown = write_policy(tmp_path, "name: x\nprobes:\n  text:\n    - id: nosuchprobe\n", "unknown")
    result = runner.invoke(app, ["policy", "check", str(unknown)], terminal_width=300)
    assert result.exit_code == 2 and "unknown probe 'nosuchprobe'" in result.output


def test_every_shipped_policy_is_valid_and_uses_known_plugin_ids():
    from pathlib import Path

    from auditd.policy.load import load_policy_file

    files = sorted(Path("policies").glob("*.yaml"))
    assert files
    for f in files:
        load_policy_file(f)  # raises PolicyError naming file:line on any unknown id


def test_every_setting_is_documented():
    from pathlib import Path

    from auditd.settings import Settings

    doc = Path("docs/configuration.md").read_text()
    missing = [n for n in Settings.model_fields if f"AUDITD_{n.upper()}" not in doc]
    assert not missing, f"document these settings in docs/configuration.md: {missing}"
