"""Where verdicts go besides the database: the registry sources the settings name. Kept apart from
auditd/daemon.py so that an audit child (which writes its verdict back itself) does not import
the daemon's HTTP stack."""

from __future__ import annotations

import logging

from auditd import __version__
from auditd.registry.dir import DirSource
from auditd.settings import Settings

log = logging.getLogger(__name__)


def build_sources(settings: Settings, engine) -> list:
    """The registry sources the settings name (the daemon polls them; audit children write back to them)."""
    sources: list = []
    if settings.registry_dir:
        sources.append(
            DirSource(
                settings.registry_dir,
                settle_s=settings.registry_settle_s,
                verdict_dir=settings.verdict_dir,
                max_config_bytes=settings.max_config_bytes,
                max_tokenizer_bytes=settings.max_tokenizer_bytes,
            )
        )
    if settings.mlflow_tracking_uri:
        from auditd.registry.mlflow import MlflowSource

        sources.append(
            MlflowSource(
                settings.mlflow_tracking_uri,
                settings.home / "mlflow",
                engine=engine,
                models=settings.mlflow_models,
                alias_on_pass=settings.mlflow_alias_on_pass,
            )
        )
    return sources


def make_write_back(sources: list):
    by_id = {s.id: s for s in sources}

    def write_back(checkpoint, verdict) -> None:
        src = by_id.get(checkpoint.source)
        if src is not None and hasattr(src, "write_verdict"):
            src.write_verdict(checkpoint.path, checkpoint.id, verdict_document(checkpoint, verdict))
            # One line per write: replicas and their audits are checked against it (tests/reliability).
            log.info("verdict %s of %s written back to %s", verdict.id, checkpoint.id, src.id)

    return write_back


def verdict_document(checkpoint, verdict) -> dict:
    return {
        "checkpoint": checkpoint.id,
        # The content the verdict is about: an audited verdict is only stored after the bytes loaded
        # hashed to this digest (auditd/runner/content.py), so a consumer can compare it with its copy.
        "digest": None if (checkpoint.meta or {}).get("refused") else checkpoint.id,
        "policy_digest": getattr(verdict, "policy_digest", None),  # the policy version that decided it
        "model": checkpoint.model,
        "outcome": verdict.outcome,
        "policy": verdict.policy,
        "reasons": verdict.reasons,
        "audit_id": verdict.audit_id,
        "decided_at": verdict.created_at.isoformat(),
        "auditd": f"auditd {__version__}",  # which release decided (docs/api.md)
    }
