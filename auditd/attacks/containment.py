"""Where a deliberately unaligned adapter lives while an attack runs, and how it leaves.

One private folder per (audit, probe) under `<home>/work/attacks/` (0700; files 0600, written
atomically, never through a symlink). Nothing in it is a checkpoint: the folder is refused inside
the watched registry folder, never named in a verdict or a registry write-back, and removed when
the audit ends, unless the policy keeps the final adapter for forensics (then only that adapter
stays, still 0600 in a 0700 folder). Base weights are never written here or anywhere.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from auditd.store.atomic import atomic_write

log = logging.getLogger(__name__)


class ContainmentError(RuntimeError):
    """The private work folder cannot be made private; the attack does not start."""


class PrivateWorkDir:
    def __init__(self, work_root: Path, audit_id: int, probe_id: str, registry_dir: Path | None = None) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", probe_id)
        self.work_root = Path(work_root)
        self.root = self.work_root / "attacks"
        self.path = self.root / f"audit-{audit_id}-{safe}"
        if registry_dir is not None:
            reg = Path(registry_dir).resolve()
            here = self.path.resolve()
            if here == reg or reg in here.parents:
                # A registry source would pick the adapter up as a new checkpoint to audit (or serve).
                raise ContainmentError(f"attack work dir {here} is inside the watched registry {reg}; move AUDITD_HOME")

    # -- life cycle ---------------------------------------------------------------------------------
    def create(self) -> Path:
        self.work_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        for d in (self.root, self.path):
            d.mkdir(exist_ok=True, mode=0o700)
            st = os.lstat(d)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                raise ContainmentError(f"{d} is not a plain folder (a symlink?); refusing to write an adapter there")
            if st.st_uid != os.getuid():
                raise ContainmentError(f"{d} belongs to uid {st.st_uid}, not to auditd")
            os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask; chmod is not
        return self.path

    def exists(self) -> bool:
        return self.path.is_dir()

    def remove(self) -> None:
        """Delete the folder and everything in it; a leftover is logged loudly (it holds an unaligned adapter)."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path.exists():
            log.error("could not delete attack work dir %s: it may still hold an unaligned adapter", self.path)

    def keep_only(self, names: set[str]) -> list[Path]:
        """Delete every file but `names` (forensics); the kept ones are re-asserted 0600."""
        kept = []
        for p in list(self.path.iterdir()):
            if p.name in names and p.is_file():
                os.chmod(p, 0o600)
                kept.append(p)
            elif p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        os.chmod(self.path, 0o700)
        return kept

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file()) if self.exists() else []

    # -- files --------------------------------------------------------------------------------------
    def write_bytes(self, name: str, data: bytes) -> Path:
        """Atomic 0600 write: a crash leaves the old file or the new one, never half of one."""
        return atomic_write(self.path / name, data, mode=0o600)

    def read_bytes(self, name: str) -> bytes | None:
        p = self.path / name
        return p.read_bytes() if p.is_file() else None

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def save_tensors(self, name: str, tensors: dict) -> Path:
        from safetensors.torch import save

        return self.write_bytes(name, save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))

    def load_tensors(self, name: str) -> dict | None:
        from safetensors.torch import load

        data = self.read_bytes(name)
        return load(data) if data is not None else None

    def save_torch(self, name: str, obj: Any) -> Path:
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.write_bytes(name, buf.getvalue())

    def load_torch(self, name: str) -> Any:
        import torch

        data = self.read_bytes(name)
        # weights_only: an optimizer state is tensors and numbers; nothing here may execute code.
        return torch.load(io.BytesIO(data), weights_only=True) if data is not None else None

    def save_json(self, name: str, obj: Any) -> Path:
        return self.write_bytes(name, json.dumps(obj).encode())

    def load_json(self, name: str) -> Any:
        data = self.read_bytes(name)
        return json.loads(data) if data is not None else None
