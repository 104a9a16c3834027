"""Settings sources and `auditd config`: file < environment < options, one-line errors for a bad
config file, and no secret printed (tokens masked, credentials cut out of URLs)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from auditd.cli import app
from auditd.settings import Settings, redact_url


@pytest.fixture
def clean_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("AUDITD_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_file_below_environment_below_options(clean_env, tmp_path):
    cfg = tmp_path / "auditd.yaml"
    cfg.write_text("poll_interval_s: 7\nmetrics_port: 1\nmax_config_bytes: 2MiB\n")
    clean_env.setenv("AUDITD_CONFIG", str(cfg))
    clean_env.setenv("AUDITD_METRICS_PORT", "2")
    s = Settings()
    assert (s.poll_interval_s, s.metrics_port, s.max_config_bytes) == (7.0, 2, 2 << 20)
    assert Settings(metrics_port=3).metrics_port == 3
    assert {"poll_interval_s", "metrics_port"} <= s.model_fields_set and "device" not in s.model_fields_set


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "which is not a file"),  # named but missing: never silently the defaults
        ("- a\n- b\n", "must be a mapping of setting: value"),
        ("a: [\n", "while parsing"),
        ("bogus: 1\npoll_interval_s: -1\n", "Extra inputs are not permitted"),
    ],
)
def test_bad_config_file_is_one_line_error(clean_env, tmp_path, content, message):
    cfg = tmp_path / "auditd.yaml"
    if content is not None:
        cfg.write_text(content)
    clean_env.setenv("AUDITD_CONFIG", str(cfg))
    res = CliRunner().invoke(app, ["config"])
    assert res.exit_code == 2
    assert message in res.output and res.output.strip().count("\n") == 0, res.output


def test_config_prints_effective_values_without_secrets(clean_env, tmp_path):
    cfg = tmp_path / "auditd.yaml"
    cfg.write_text("api_token: tok-in-file\nregistry_settle_s: 9\n")
    clean_env.setenv("AUDITD_CONFIG", str(cfg))
    clean_env.setenv("AUDITD_WEBHOOK_SECRET", "hook-secret")
    clean_env.setenv("AUDITD_DB_URL", "postgresql+psycopg://auditd:p@ss@db.internal/auditd")
    clean_env.setenv("AUDITD_MLFLOW_TRACKING_URI", "https://user:mlpass@mlflow:5000")
    res = CliRunner().invoke(app, ["config", "--json", "--home", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    values = json.loads(res.stdout)
    assert values["registry_settle_s"] == 9.0 and values["home"] == str((tmp_path / "h").resolve())
    assert values["api_token"] == values["webhook_secret"] == "**********" and values["hf_webhook_secret"] is None
    assert values["db_url"] == "postgresql+psycopg://***@db.internal/auditd"
    assert values["mlflow_tracking_uri"] == "https://***@mlflow:5000"
    table = CliRunner().invoke(app, ["config"], terminal_width=200)
    assert table.exit_code == 0 and "AUDITD_REGISTRY_SETTLE_S" in table.stdout
    for secret in ("tok-in-file", "hook-secret", "p@ss", "mlpass"):
        assert secret not in res.stdout and secret not in table.stdout


def test_redact_url_keeps_plain_urls():
    assert redact_url("sqlite:////var/lib/auditd/auditd.db") == "sqlite:////var/lib/auditd/auditd.db"
    assert redact_url("postgresql://u:x@y@host:5432/db") == "postgresql://***@host:5432/db"
