"""Daemon settings. Precedence: config file (AUDITD_CONFIG, YAML) < environment (AUDITD_*) <
command-line options. Every field is documented because `auditd config` prints them (and
docs/configuration.md lists them)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

REPO_POLICIES = Path(__file__).resolve().parent.parent / "policies"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """ "16MiB", "4 GiB", "500GB", "1048576" -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 16MiB, 4GiB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def redact_url(url: str) -> str:
    """A URL with its user and password replaced by ***, for logs and `auditd config`."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


class _ConfigFile(YamlConfigSettingsSource):
    """pydantic-settings' YAML source on the file AUDITD_CONFIG names. The library skips a missing
    file silently; a named one that is missing, or is not a mapping, is an error here."""

    def _read_file(self, file_path) -> dict[str, Any]:
        data = super()._read_file(file_path)
        if not isinstance(data, dict):
            raise ValueError(f"{file_path}: the config file must be a mapping of setting: value")
        return data


def _config_file_source(settings_cls) -> PydanticBaseSettingsSource | None:
    path = os.environ.get("AUDITD_CONFIG")
    if not path:
        return None
    if not Path(path).is_file():
        raise ValueError(f"AUDITD_CONFIG names {path!r}, which is not a file")
    return _ConfigFile(settings_cls, yaml_file=Path(path))


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
    policy: str = Field(
        "default",
        description="Policy name in policies_dir, or a path to a YAML file (a path has a '/' or a .yaml suffix).",
    )
    policies_dir: Path = Field(REPO_POLICIES, description="Folder of policy YAML files.")
    metrics_host: str = Field("127.0.0.1", description="Address of the HTTP server (/metrics, /healthz).")
    metrics_port: int = Field(9464, description="Port of the HTTP server; 0 picks a free one.")
    device: str = Field("cpu", description="Device audits run on: cpu, cuda, cuda:1 ...")
    device_slots: int = Field(1, description="Audits that may run at once on the device.", ge=1)
    devices: str | None = Field(
        None,
        description="Several devices and their audit slots, e.g. 'cuda:0=1,cuda:1=2' (overrides device/device_slots).",
    )
    max_attempts: int = Field(
        3,
        description="Attempts before an interrupted audit is given up as error (a policy's budget.max_attempts, "
        "when set, wins).",
        ge=1,
    )
    # -- audit child processes (docs/operations.md, "Audit processes") --
    executor: Literal["process", "inline", "ray"] = Field(
        "process",
        description="process: each audit runs in a fresh child process with resource limits and a hard "
        "deadline (the daemon never loads a model); ray: as a Ray task on a cluster (docs/scaling.md); inline: in "
        "the daemon's own process (tests, debugging).",
    )
    child_memory_mb: int | None = Field(
        None,
        description="Address-space limit (RLIMIT_AS) of an audit child, MiB; default 80% of the machine's RAM "
        "(at least 8 GiB) on CPU devices and none on CUDA devices (CUDA reserves huge address ranges); 0 disables.",
        ge=0,
    )
    child_cpu_s: int | None = Field(
        None,
        description="CPU-time limit (RLIMIT_CPU) of an audit child, seconds; default the policy's "
        "audit_timeout_s x CPU cores + 60; 0 disables.",
        ge=0,
    )
    child_max_files: int = Field(4096, description="Open-file limit (RLIMIT_NOFILE) of an audit child.", ge=64)
    child_stop_grace_s: float = Field(
        10.0, description="Seconds between SIGTERM and SIGKILL of an audit child (deadline or daemon stop).", gt=0
    )
    # -- scaling out (docs/scaling.md) --
    ray_address: str = Field(
        "",
        description="executor ray: 'auto' (the cluster this host belongs to), 'ray://host:10001' (Ray client) or "
        "host:port of a head node; empty starts a local Ray instance owned by the daemon. With SQLite every node "
        "must be this host.",
    )
    ray_num_cpus: float = Field(1.0, description="executor ray: CPUs each audit task reserves.", ge=0)
    ray_num_gpus: float | None = Field(
        None,
        description="executor ray: GPUs each audit task reserves (default 1 when the device is cuda*, else 0).",
        ge=0,
    )
    ray_memory_mb: int | None = Field(None, description="executor ray: memory each audit task reserves, MiB.", ge=0)
    ray_resources: str | None = Field(
        None, description="executor ray: custom resources each audit task needs, e.g. 'accelerator_type:H100=0.01'."
    )
    ray_local_cpus: int | None = Field(
        None, description="executor ray with an empty ray_address: CPUs of the local Ray instance (default: all).", ge=1
    )
    leader_lease_s: float = Field(
        10.0,
        description="Replicas on PostgreSQL: how often a follower tries to become leader and the leader checks "
        "its lock; a dead leader is replaced within two of these.",
        gt=0,
    )
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
        None,
        description="systemd's watchdog is fed only while the scheduler loop ran within this many seconds "
        "(default: max(60, 3 x poll_interval_s)). At least 5: the loop ticks every 2 s.",
        ge=5,
    )
    # -- untrusted checkpoints (docs/security.md) --
    snapshot_dir: Path | None = Field(
        None,
        description="Where audits take their private read-only snapshot of a checkpoint (default <home>/snapshots); "
        "a reflink-capable filesystem (btrfs, XFS) makes snapshots free.",
    )
    snapshot_max_bytes: int | None = Field(
        None,
        description="Checkpoints larger than this are re-hashed in place before and after the audit instead of "
        "snapshotted (default: always snapshot). Accepts 500GiB-style sizes.",
        ge=0,
    )
    max_config_bytes: int = Field(
        16 << 20,
        description="Largest config.json / tokenizer_config.json / model_index.json (and other small JSON) "
        "a checkpoint may carry; checked by size before parsing.",
        ge=1024,
    )
    max_tokenizer_bytes: int = Field(
        256 << 20, description="Largest tokenizer.json / vocab / merges / tokenizer.model file.", ge=1024
    )
    max_model_bytes: int | None = Field(
        None,
        description="Refuse a model whose parameters (estimated from config.json and weight headers before "
        "loading) would need more memory than this (default: half the machine's memory).",
        ge=1,
    )
    max_prompt_chars: int = Field(
        200_000,
        ge=1000,
        description="Largest prompt a chat template may render; longer output ends the audit in error.",
    )
    # -- policy changes (docs/policies.md) --
    reaudit_on_policy_change: Literal["none", "latest", "all"] = Field(
        "latest",
        description="On start and on SIGHUP, which checkpoints a changed policy applies to: none, the "
        "latest checkpoint of each model, or all. Decision-only changes are re-decided from stored results; plan "
        "changes queue a re-audit that reuses every stored sample still valid (docs/policies.md).",
    )
    reaudit_max_per_hour: int = Field(
        20,
        description="At most this many re-audits are queued per hour (below new checkpoints' priority); the "
        "rest wait for later passes. Re-decisions are not limited (they load no model).",
        ge=0,
    )
    log_level: str = Field("INFO", description="Log level of the daemon's structured logs.")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        config_file = _config_file_source(settings_cls)
        return (init_settings, env_settings) + ((config_file,) if config_file else ())

    @field_validator("snapshot_max_bytes", "max_config_bytes", "max_tokenizer_bytes", "max_model_bytes", mode="before")
    @classmethod
    def _sizes(cls, v):
        return parse_size(v) if isinstance(v, str) else v

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON values, secrets masked (SecretStr) and credentials cut out of URLs."""
        values = self.model_dump(mode="json")  # a SecretStr dumps as "**********"
        for name in ("db_url", "mlflow_tracking_uri"):
            if values[name]:
                values[name] = redact_url(values[name])
        return values

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

    def child_memory_bytes(self, device: str) -> int | None:
        """RLIMIT_AS for an audit child on `device`, or None for no limit."""
        if self.child_memory_mb is not None:
            return self.child_memory_mb * 2**20 or None
        if device.startswith("cuda"):
            return None
        # Address space, not memory: torch alone maps ~4 GB, so never below 8 GiB on small machines.
        return max(int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.8), 8 * 2**30)

    def child_cpu_seconds(self, audit_timeout_s: float) -> int | None:
        if self.child_cpu_s is not None:
            return self.child_cpu_s or None
        return int(audit_timeout_s * (os.cpu_count() or 1)) + 60

    @property
    def ray_resource_map(self) -> dict[str, float]:
        """ray_resources 'name=amount,...' -> {name: amount}."""
        out: dict[str, float] = {}
        for part in (self.ray_resources or "").split(","):
            if not part.strip():
                continue
            name, _, amount = part.strip().rpartition("=")
            try:
                out[name] = float(amount)
            except ValueError:
                name = ""
            if not name or out.get(name, -1) < 0:
                raise ValueError(f"AUDITD_RAY_RESOURCES: bad entry {part!r} (expected name=amount, e.g. GPU_A100=1)")
        return out

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'auditd.db'}"

    @property
    def webhook_path_roots(self) -> list[Path]:
        return list(self.webhook_roots) or ([self.registry_dir] if self.registry_dir else [])

    @property
    def snapshot_path(self) -> Path:
        return self.snapshot_dir or self.home / "snapshots"

    @property
    def model_memory_limit(self) -> int:
        if self.max_model_bytes:
            return self.max_model_bytes
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):
            return 8 << 30

    @property
    def work_dir(self) -> Path:
        return self.home / "work"
