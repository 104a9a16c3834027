"""The `dir` registry source: a local folder of checkpoints in Hugging Face layout.

A checkpoint is a folder (at most `max_depth` levels below the root) holding config.json,
model_index.json (a diffusers pipeline: text-to-image), *.gguf, or weight files. Lineage comes from
an optional `auditd.json` in the folder: {"model": "...", "parent": "<relative path or sha256:...>"}.
Without it, the model name is the parent folder's path for nested layouts (root/model/version)
or the folder's own name.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from sqlmodel import Session, select

from auditd.backends.limits import check_input_sizes
from auditd.backends.loading import CheckpointError
from auditd.registry.checkpoint import Checkpoint, Kind
from auditd.registry.contain import VERDICT_FILE, check_contained
from auditd.registry.digest import PARTIAL_SUFFIXES, checkpoint_files, content_digest, stat_signature
from auditd.registry.safe_write import write_beneath
from auditd.store.models import RegistryEntry, utcnow

log = logging.getLogger(__name__)

MARKERS = ("config.json", "model_index.json")
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt")
LINEAGE_FILE = "auditd.json"


def is_checkpoint_dir(path: Path) -> bool:
    if any((path / m).is_file() for m in MARKERS):
        return True
    return any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file())


def detect_kind(path: Path) -> Kind:
    return "t2i" if (path / "model_index.json").is_file() else "text"


class DirSource:
    id = "dir"

    def __init__(
        self,
        root: str | Path,
        settle_s: float = 5.0,
        max_depth: int = 3,
        verdict_dir: str | Path | None = None,
        max_config_bytes: int = 16 << 20,
        max_tokenizer_bytes: int = 256 << 20,
    ):
        self.root = Path(root).resolve()
        self.max_config_bytes, self.max_tokenizer_bytes = max_config_bytes, max_tokenizer_bytes
        # A folder still being copied must not be hashed half-written: wait until its newest
        # file is this old.
        self.settle_s = settle_s
        self.max_depth = max_depth
        self.verdict_dir = Path(verdict_dir) if verdict_dir else None

    def locations(self) -> list[Path]:
        found: list[Path] = []

        def walk(d: Path, depth: int) -> None:
            try:
                children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc)
                return
            for child in children:
                if is_checkpoint_dir(child):
                    found.append(child)
                elif depth < self.max_depth:
                    walk(child, depth + 1)

        if self.root.is_dir():
            walk(self.root, 1)
        return found

    def lineage(self, location: Path) -> dict:
        f = location / LINEAGE_FILE
        if not f.is_file():
            return {}
        try:
            data = json.loads(f.read_text())
            return data if isinstance(data, dict) else {}
        except ValueError as exc:
            log.warning("ignoring unreadable lineage file %s: %s", f, exc)
            return {}

    def model_name(self, location: Path, lineage: dict) -> str:
        if lineage.get("model"):
            return str(lineage["model"])
        rel = location.relative_to(self.root)
        return rel.parent.as_posix() if len(rel.parts) > 1 else rel.name

    def poll(self, session: Session) -> list[Checkpoint]:
        """New checkpoints since the last poll. Adds its bookkeeping to `session`; the caller
        commits it together with the queued audits, so a crash cannot lose a found checkpoint."""
        new: list[Checkpoint] = []
        pending: list[tuple[str, Path, str]] = []
        known = {e.location: e for e in session.exec(select(RegistryEntry).where(RegistryEntry.source == self.id))}
        by_location: dict[str, str] = {loc: e.checkpoint_id for loc, e in known.items() if e.checkpoint_id}
        for location in self.locations():
            rel = location.relative_to(self.root).as_posix()
            try:  # before anything is read: links out of the root, configs too large to parse
                check_contained(location, self.root)
                check_input_sizes(location, self.max_config_bytes, self.max_tokenizer_bytes)
            except CheckpointError as exc:
                self._refuse(session, known, rel, location, str(exc), new)
                continue
            except OSError as exc:
                log.warning("cannot read checkpoint folder %s: %s", location, exc)
                continue
            try:
                files = checkpoint_files(location)
                if any(f.name.endswith(PARTIAL_SUFFIXES) for f in files):
                    continue
                signature, newest = stat_signature(location)
                entry = known.get(rel)
                if entry is not None and entry.signature == signature:
                    continue
                if time.time() - newest < self.settle_s:
                    continue  # still being written; look again next poll
                digest = content_digest(location)
            except OSError as exc:
                log.warning("cannot read checkpoint folder %s: %s", location, exc)
                continue
            if not self._record(session, known, rel, signature, digest):
                continue  # touched or re-copied: same content, already reported
            by_location[rel] = digest
            pending.append((rel, location, digest))
        # Parents are resolved after every digest of this poll is known, and new checkpoints are
        # returned parents first, so a parent and its child dropped together queue in that order.
        for rel, location, digest in pending:
            lineage = self.lineage(location)
            new.append(
                Checkpoint(
                    id=digest,
                    model=self.model_name(location, lineage),
                    kind=detect_kind(location),
                    path=str(location),
                    source=self.id,
                    parent=_resolve_parent(lineage, rel, by_location),
                    metadata={"location": rel, "lineage": lineage, "root": str(self.root)},
                )
            )
        return _parents_first(new)

    def _record(self, session: Session, known: dict, rel: str, signature: str, digest: str) -> bool:
        """Note what is at `rel` now; True if that content is new there."""
        entry = known.get(rel)
        if entry is None:
            entry = RegistryEntry(source=self.id, location=rel, signature=signature)
            known[rel] = entry
        entry.signature, entry.seen_at = signature, utcnow()
        session.add(entry)
        if entry.checkpoint_id == digest:
            return False
        entry.checkpoint_id = digest
        return True

    def _refuse(self, session: Session, known: dict, rel: str, location: Path, reason: str, new: list) -> None:
        """A folder with a link leading outside the root (or a config too large to parse): reported once
        as a checkpoint whose audit ends in a stored error naming the file. Its id is derived from the
        refusal, not from content, which is never read."""
        marker = "refused:" + hashlib.sha256(reason.encode()).hexdigest()
        entry = known.get(rel)
        if entry is not None and entry.signature == marker:
            return
        digest = "sha256:" + hashlib.sha256(f"refused\0{rel}\0{reason}".encode()).hexdigest()
        if not self._record(session, known, rel, marker, digest):
            return
        log.warning("%s", reason)
        new.append(
            Checkpoint(
                id=digest,
                model=self.model_name(location, {}),
                kind="text",
                path=str(location),
                source=self.id,
                metadata={"location": rel, "refused": reason, "root": str(self.root)},
            )
        )

    def write_verdict(self, checkpoint_path: str, checkpoint_id: str, verdict: dict) -> Path:
        """Write the verdict JSON beside the checkpoint, or into the configured side folder, following
        no link below the registry root (auditd.registry.safe_write)."""
        data = json.dumps(verdict, indent=2, sort_keys=True, default=str).encode()
        if self.verdict_dir:
            self.verdict_dir.mkdir(parents=True, exist_ok=True)
            return write_beneath(self.verdict_dir, "", f"{checkpoint_id.replace(':', '-')}.json", data)
        rel = Path(os.path.abspath(checkpoint_path)).relative_to(self.root)  # ValueError: not ours to write
        return write_beneath(self.root, rel, VERDICT_FILE, data)


def _resolve_parent(lineage: dict, rel: str, by_location: dict[str, str]) -> str | None:
    parent = lineage.get("parent") or lineage.get("baseline")
    if not isinstance(parent, str):
        return None
    if parent.startswith("sha256:"):
        return parent
    key = os.path.normpath(os.path.join(rel, parent)) if parent.startswith(".") else parent.strip("/")
    return by_location.get(key)


def _parents_first(cps: list[Checkpoint]) -> list[Checkpoint]:
    ids = {c.id for c in cps}
    done: set[str] = set()
    out: list[Checkpoint] = []
    pending = list(cps)
    while pending:
        ready = [c for c in pending if c.parent not in ids or c.parent in done or c.parent == c.id]
        ready = ready or pending[:1]  # a lineage cycle: keep going rather than loop forever
        for c in ready:
            out.append(c)
            done.add(c.id)
            pending.remove(c)
    return out
