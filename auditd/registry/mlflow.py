"""The `mlflow` registry source: model versions of an MLflow model registry.

Polling lists the registry's model versions (of the configured models, or all); each READY
version not seen before is downloaded through the MLflow client into auditd's home and becomes a
checkpoint by content digest. A version's artifacts must hold a Hugging Face layout folder
(config.json / model_index.json / *.gguf), at the top or in a sub-folder. Lineage: the version
tag `auditd.parent` names the parent as a version number of the same model, "name/version", or a
checkpoint id; without it the model's pinned baseline applies.

Write-back: the verdict lands as model-version tags `auditd.verdict`, `auditd.checkpoint`,
`auditd.reasons` (a one-line summary), `auditd.policy`, `auditd.audit_id`; with `alias_on_pass`
set, that alias is moved to the version only when the verdict is pass (a block or error never
moves it). A version whose artifacts cannot be downloaded is tagged `error` at once: it can never
look approved. MLflow's own webhooks (MLflow >= 3.3, SQL backends) only make this source poll
sooner (see auditd/api/routes_hooks.py); polling stays the source of truth.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from auditd.registry.checkpoint import Checkpoint
from auditd.registry.digest import content_digest
from auditd.registry.dir import detect_kind, is_checkpoint_dir
from auditd.store.models import RegistryEntry, Verdict, utcnow

log = logging.getLogger(__name__)

PARENT_TAG = "auditd.parent"
TAG_MAX = 4000  # MLflow caps tag values (5000 characters in older servers)


def find_checkpoint_dir(root: Path) -> Path | None:
    """The shallowest folder under root that is a checkpoint (root itself first)."""
    if root.is_file():
        return root if root.suffix == ".gguf" else None
    if is_checkpoint_dir(root):
        return root
    for depth in range(1, 4):
        for d in sorted(p for p in root.glob("/".join(["*"] * depth)) if p.is_dir()):
            if is_checkpoint_dir(d):
                return d
    return None


def reasons_summary(verdict: dict) -> str:
    parts = [
        f"{r.get('action')}: {r.get('message')}" for r in verdict.get("reasons") or [] if r.get("action") != "pass"
    ]
    text = "; ".join(parts) or "no findings"
    return text if len(text) <= TAG_MAX else text[: TAG_MAX - 1] + "…"


class MlflowSource:
    id = "mlflow"

    def __init__(
        self,
        tracking_uri: str,
        download_dir: str | Path,
        engine: Engine | None = None,
        models: list[str] | None = None,
        alias_on_pass: str | None = None,
        registry_uri: str | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.download_dir = Path(download_dir)
        self.engine = engine  # needed for write-back: which versions hold a checkpoint
        self.models = list(models or [])
        self.alias_on_pass = alias_on_pass
        self._client_obj = None

    @property
    def client(self):
        if self._client_obj is None:
            from mlflow import MlflowClient  # heavy: only when the source is used

            self._client_obj = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        return self._client_obj

    def versions(self, only_model: str | None = None) -> list:
        names = [only_model] if only_model else self.models
        found = []
        if names:
            for name in names:
                escaped = name.replace("'", "\\'")
                found += self.client.search_model_versions(f"name='{escaped}'")
        else:
            found = self.client.search_model_versions()
        return sorted(found, key=lambda mv: (mv.name, int(mv.version)))

    def poll(self, session: Session, only_model: str | None = None) -> list[Checkpoint]:
        """New READY versions since the last poll, downloaded. Bookkeeping goes into `session`
        (the caller commits it with the queued audits)."""
        known = {e.location: e for e in session.exec(select(RegistryEntry).where(RegistryEntry.source == self.id))}
        new: list[Checkpoint] = []
        for mv in self.versions(only_model):
            location = f"{mv.name}/{mv.version}"
            if location in known or str(mv.status) != "READY":
                continue
            entry = RegistryEntry(source=self.id, location=location, signature=f"{mv.run_id}:{mv.source}")
            known[location] = entry
            session.add(entry)
            try:
                path = self._download(mv)
                digest = content_digest(path, root=path)  # a link out of the downloaded artifacts is refused
            except Exception as exc:  # never audited means never approved: say so in the registry
                entry.error = " ".join(str(exc).split())[:500]
                log.error("mlflow %s: cannot download its artifacts: %s", location, entry.error)
                self._tag(
                    mv.name,
                    mv.version,
                    {
                        "outcome": "error",
                        "checkpoint": "",
                        "policy": "",
                        "audit_id": "",
                        "reasons": [{"action": "error", "message": f"cannot download: {entry.error}"}],
                    },
                )
                continue
            entry.checkpoint_id, entry.seen_at = digest, utcnow()
            tags = dict(mv.tags or {})
            parent = self._parent(tags.get(PARENT_TAG), mv.name, known)
            new.append(
                Checkpoint(
                    id=digest,
                    model=mv.name,
                    kind=detect_kind(path) if path.is_dir() else "text",
                    path=str(path),
                    source=self.id,
                    parent=parent,
                    metadata={
                        "location": location,
                        "lineage": {"parent": tags.get(PARENT_TAG)} if tags.get(PARENT_TAG) else {},
                        "mlflow": {
                            "name": mv.name,
                            "version": str(mv.version),
                            "run_id": mv.run_id,
                            "source": mv.source,
                        },
                    },
                )
            )
            done = session.exec(
                select(Verdict).where(col(Verdict.checkpoint_id) == digest).order_by(col(Verdict.id).desc())
            ).first()
            if done is not None:  # same content as an audited version: tag it now, no second audit
                self._tag(mv.name, mv.version, _doc(done))
        return new

    def _parent(self, named: str | None, model: str, known: dict) -> str | None:
        if not named:
            return None
        if named.startswith("sha256:"):
            return named
        location = named if "/" in named else f"{model}/{named}"
        entry = known.get(location)
        return entry.checkpoint_id if entry else None

    def _download(self, mv) -> Path:
        import mlflow.artifacts

        dest = self.download_dir / mv.name / str(mv.version)
        if dest.exists():  # a crash mid-download left a partial copy
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        uri = self.client.get_model_version_download_uri(mv.name, mv.version)
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest), tracking_uri=self.tracking_uri)
        )
        found = find_checkpoint_dir(local)
        if found is None:
            raise ValueError(f"no checkpoint (config.json, model_index.json, weights) in the artifacts at {uri}")
        return found

    # -- write-back ---------------------------------------------------------------------------
    def write_verdict(self, checkpoint_path: str, checkpoint_id: str, verdict: dict) -> list[str]:
        """Tag every version that holds this checkpoint; move the alias on pass."""
        if self.engine is None:
            raise RuntimeError("MlflowSource needs the engine to write verdicts back")
        from auditd.store.db import session

        with session(self.engine) as s:
            locations = s.exec(
                select(RegistryEntry.location).where(
                    RegistryEntry.source == self.id, RegistryEntry.checkpoint_id == checkpoint_id
                )
            ).all()
        for location in locations:
            name, _, version = location.rpartition("/")
            self._tag(name, version, verdict)
        return list(locations)

    def _tag(self, name: str, version: str, verdict: dict) -> None:
        # auditd.verdict goes last: whoever sees it (a CD job polling tags) finds its context set.
        tags = {
            "auditd.checkpoint": verdict.get("checkpoint") or "",
            "auditd.digest": verdict.get("digest") or "",
            "auditd.reasons": reasons_summary(verdict),
            "auditd.policy": verdict.get("policy") or "",
            "auditd.audit_id": str(verdict.get("audit_id") or ""),
            "auditd.policy_digest": verdict.get("policy_digest") or "",  # the policy version that decided
            "auditd.verdict": verdict.get("outcome") or "error",
        }
        outcome = tags.pop("auditd.verdict")
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, value)
        if self.alias_on_pass and outcome == "pass":
            self.client.set_registered_model_alias(name, self.alias_on_pass, str(version))
        self.client.set_model_version_tag(name, str(version), "auditd.verdict", outcome)
        tags["auditd.verdict"] = outcome
        log.info("mlflow %s/%s tagged %s", name, version, tags["auditd.verdict"])


def _doc(verdict: Verdict) -> dict:
    return {
        "outcome": verdict.outcome,
        "checkpoint": verdict.checkpoint_id,
        "digest": verdict.checkpoint_id,
        "policy": verdict.policy,
        "reasons": verdict.reasons,
        "audit_id": verdict.audit_id,
    }
