"""Daemon settings. Precedence: config file (AUDITD_CONFIG, YAML) < environment (AUDITD_*) <
command-line options. Every field is documented because `auditd config` prints them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the file named by AUDITD_CONFIG, lowest precedence."""

    def get_field_value(self, field, field_name):  # pragma: no cover - unused by __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("AUDITD_CONFIG")
        if not path:
            return {}
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config file must be a mapping of setting: value")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDITD_", extra="forbid")

    home: Path = Field(Path(".auditd"), description="State folder: SQLite database, work dirs, images.")
    db_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<home>/auditd.db. PostgreSQL: postgresql+psycopg://..."
    )
    registry_dir: Path | None = Field(None, description="Folder watched by the `dir` registry source.")
    poll_interval_s: float = Field(30.0, description="Seconds between registry polls.", gt=0)
    registry_settle_s: float = Field(
        5.0, description="A folder is hashed only once its newest file is this old (copies in progress wait).", ge=0
    )
    verdict_dir: Path | None = Field(
        None, description="Write verdict JSON here (by checkpoint id) instead of beside the checkpoint."
    )
    policy: str = Field("default", description="Policy name in policies_dir, or a path to a YAML file.")
    policies_dir: Path = Field(REPO_POLICIES, description="Folder of policy YAML files.")
    metrics_host: str = Field("127.0.0.1", description="Address of the HTTP server (/metrics, /healthz).")
    metrics_port: int = Field(9464, description="Port of the HTTP server; 0 picks a free one.")
    device: str = Field("cpu", description="Device audits run on: cpu, cuda, cuda:1 ...")
    device_slots: int = Field(1, description="Audits that may run at once on the device.", ge=1)
    devices: str | None = Field(
        None, description="Several devices and their audit slots, e.g. 'cuda:0=1,cuda:1=2' (overrides device/device_slots)."
    )
    max_attempts: int = Field(3, description="Attempts before an interrupted audit is given up as error.", ge=1)
    heartbeat_timeout_s: float = Field(
        300.0, description="A running audit whose heartbeat is older than this is considered orphaned."
    )
    api_token: SecretStr | None = Field(None, description="Bearer token for state-changing API calls.")
    # -- registry integration: webhooks and MLflow (docs/api.md) --
    webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 secret of POST /v1/hooks/registry; unset disables that webhook."
    )
    webhook_roots: list[Path] = Field(
        default_factory=list, description="Folders a generic webhook may name checkpoints in (default: registry_dir)."
    )
    webhook_tolerance_s: float = Field(300.0, description="Accepted webhook timestamp skew, seconds.", gt=0)
    webhook_max_body_bytes: int = Field(1_048_576, description="Largest accepted webhook body, bytes.", ge=1024)
    hf_webhook_secret: SecretStr | None = Field(
        None, description="Secret of Hugging Face Hub webhooks (X-Webhook-Secret); unset disables them."
    )
    hf_cache_dir: Path | None = Field(None, description="Hugging Face cache holding the snapshots Hub events name.")
    hf_download: bool = Field(False, description="Let Hub webhooks download snapshots (off: local snapshots only).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow server to poll as a registry source.")
    mlflow_models: list[str] = Field(default_factory=list, description="Registered models to audit (default: all).")
    mlflow_alias_on_pass: str | None = Field(
        None, description="Alias moved to a model version when its verdict is pass (never on warn/block/error)."
    )
    mlflow_webhook_secret: SecretStr | None = Field(
        None, description="Secret of MLflow webhooks (X-MLflow-Signature); unset disables POST /v1/hooks/mlflow."
    )
    watchdog_stale_s: float | None = Field(
        None, description="systemd's watchdog is fed only while the scheduler loop ran within this many seconds "
        "(default: max(60, 3 x poll_interval_s)). At least 5: the loop ticks every 2 s.", ge=5
    )
    reaudit_on_policy_change: Literal["none", "latest", "all"] = Field(
        "latest", description="On start and on SIGHUP, which checkpoints a changed policy applies to: none, the "
        "latest checkpoint of each model, or all. Decision-only changes are re-decided from stored results; plan "
        "changes queue a re-audit that reuses every stored sample still valid (docs/policies.md)."
    )
    reaudit_max_per_hour: int = Field(
        20, description="At most this many re-audits are queued per hour (below new checkpoints' priority); the "
        "rest wait for later passes. Re-decisions are not limited (they load no model).", ge=0
    )
    log_level: str = Field("INFO", description="Log level of the daemon's structured logs.")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return (init_settings, env_settings, _YamlFileSource(settings_cls))

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def device_slots_map(self) -> dict[str, int]:
        """Device -> how many audits may run on it at once."""
        if not self.devices:
            return {self.device: self.device_slots}
        out = {}
        for part in self.devices.split(","):
            name, _, slots = part.strip().partition("=")
            if not name or (slots and not slots.isdigit()) or (slots and int(slots) < 1):
                raise ValueError(f"AUDITD_DEVICES: bad entry {part!r} (expected device=slots, e.g. cuda:0=1)")
            out[name] = int(slots or 1)
        return out

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'auditd.db'}"

    @property
    def webhook_path_roots(self) -> list[Path]:
        return list(self.webhook_roots) or ([self.registry_dir] if self.registry_dir else [])

    @property
    def work_dir(self) -> Path:
        return self.home / "work"
