"""The image store: generated images on disk, content-addressed, with thumbnails for reports.

An image is stored once as PNG under ``<home>/images/<aa>/<sha256>.png`` where the name is the
SHA-256 of its PNG bytes, so a resumed audit that regenerates an image writes nothing new and two
identical images share one file. The database keeps the path relative to the home folder
(``images/aa/<sha>.png``), so a home moved as a whole stays consistent. Thumbnails (at most
`THUMB_PX` on a side, never upscaled) live under ``<home>/images/thumbs/`` with the same name.
Writes are atomic (store/atomic.py): a crash never leaves half an image under its hash.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from pathlib import Path
from typing import Any

from auditd.store.atomic import atomic_write

THUMB_PX = 128
IMAGES_DIR = "images"


def open_image_store(home: str | Path, keep: bool) -> ImageStore:
    """The audit's image store: the home's, or (images not kept) a private scratch home under
    <home>/work that the caller removes after judging (`shutil.rmtree(store.home)`)."""
    home = Path(home)
    if keep:
        return ImageStore(home)
    home.joinpath("work").mkdir(parents=True, exist_ok=True)
    return ImageStore(tempfile.mkdtemp(prefix="t2i-", dir=home / "work"))


class ImageStore:
    def __init__(self, home: str | Path):
        self.home = Path(home).resolve()
        self.root = self.home / IMAGES_DIR

    def put(self, image: Any) -> str:
        """Store a PIL image; returns its path relative to the home folder."""
        data = png_bytes(image)
        digest = hashlib.sha256(data).hexdigest()
        rel = f"{IMAGES_DIR}/{digest[:2]}/{digest}.png"
        target = self.home / rel
        if not target.exists():
            atomic_write(target, data, mode=0o600)
        thumb = self.thumb_path(rel)
        if not thumb.exists():
            small = image.copy()
            small.thumbnail((THUMB_PX, THUMB_PX))
            atomic_write(thumb, png_bytes(small), mode=0o600)
        return rel

    def path(self, rel: str) -> Path:
        """The absolute path of a stored image; refuses anything outside the store."""
        p = (self.home / rel).resolve()
        if not p.is_relative_to(self.root):
            raise ValueError(f"not a stored image path: {rel!r}")
        return p

    def thumb_path(self, rel: str) -> Path:
        p = self.path(rel)
        return self.root / "thumbs" / p.parent.name / p.name


def png_bytes(image: Any) -> bytes:
    """Deterministic PNG encoding (no metadata), so equal pixels give equal bytes and hashes."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
