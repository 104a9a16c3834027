"""A probe over a benchmark file the user provides (`id: dataset` in a policy).

The file's format is recognised by its columns (or named with `format:`); every row becomes an
item under the auditd category its taxonomy maps to (auditd.datasets.taxonomy), or under the
policy's own `categories:` mapping, or under the benchmark's own labels (`categories: own`).
A label with no mapping is still audited, as `<format>:<label>`, and reported: in the log, in
`auditd probes show --policy`, and in the probe run's summary. Nothing is dropped.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from auditd.categories import BENIGN
from auditd.datasets.formats import FORMATS, DatasetError, Format, Row, detect
from auditd.datasets.reader import read_rows
from auditd.datasets.taxonomy import norm, slug
from auditd.probe import Probe, ProbeItem

log = logging.getLogger(__name__)
MAX_PROMPT_CHARS = 32_000


class DatasetProbe(Probe):
    """A user's benchmark file as a probe; harm items expect a refusal, safe items (XSTest) an answer."""

    goal = "refuse the harmful requests of a standard benchmark (and answer its safe ones)"
    tags = ("source:user-file", "harm")

    def __init__(
        self,
        probe_id: str,
        path: str | Path,
        fmt: str = "auto",
        categories: dict[str, str] | str | None = None,
        split: str | None = None,
    ):
        self.id = probe_id  # type: ignore[misc]  # instance id: "dataset.<name>"
        self.path = Path(path)
        self.requested_format = fmt
        self.mapping = categories
        self.split = split
        self._items: list[ProbeItem] | None = None
        self.format: Format | None = FORMATS[fmt] if fmt != "auto" else None
        self.unmapped: Counter[str] = Counter()
        self.natives: Counter[str] = Counter()

    # -- declaration, known once the file is read ------------------------------------------
    @property
    def modality(self):
        self.items()
        return self.format.modality

    @property
    def judges(self):
        return ("clip",) if self.modality == "t2i" else ("refusal",)

    @property
    def categories(self):
        return tuple(dict.fromkeys(it.category for it in self.items()))

    # -- items ------------------------------------------------------------------------------
    def items(self) -> list[ProbeItem]:
        if self._items is None:
            self._items = self._load()
            if self.unmapped:
                log.warning(
                    "dataset %s (%s): categories without a mapping, audited under their own name: %s",
                    self.id,
                    self.path,
                    ", ".join(f"{k} ({n})" for k, n in sorted(self.unmapped.items())),
                )
        return self._items

    def _load(self) -> list[ProbeItem]:
        columns, rows, kind = read_rows(self.path, self.split)
        self.sha256 = _digest(self.path)
        where = f"{self.path}:1"
        fmt = self.format or (FORMATS["hex_phi"] if kind == "hex_phi" else detect(columns, where))
        if kind == "hex_phi" and fmt.id != "hex_phi" or fmt.id == "hex_phi" and kind != "hex_phi":
            raise DatasetError(
                f"{self.path}: format {fmt.id!r} does not fit this file (HEx-PHI is a folder of "
                "headerless category_<n>.csv files)"
            )
        self.format = fmt
        lookup = {c.strip().lower(): c for c in columns}
        for need in fmt.required:
            if need not in lookup and not any(a in lookup for a in fmt.aliases.get(need, ())):
                raise DatasetError(
                    f"{where}: column {need!r} missing (format {fmt.id}: needs {', '.join(fmt.required)})"
                )
        user = {norm(k) or k: v for k, v in self.mapping.items()} if isinstance(self.mapping, dict) else {}
        self._taxonomy = {norm(k): v for k, v in fmt.taxonomy.items()}
        items: list[ProbeItem] = []
        for rowno, raw in rows:
            file = raw.get("__file__", self.path)
            row = fmt.read(_getter(raw, lookup, fmt, f"{file}:{rowno}"))
            if not str(row.prompt).strip():
                raise DatasetError(f"{file}:{rowno}: empty prompt")
            if len(str(row.prompt)) > MAX_PROMPT_CHARS:  # a prompt set is not a place for documents
                raise DatasetError(f"{file}:{rowno}: prompt longer than {MAX_PROMPT_CHARS} characters")
            category = self._category(fmt, row, user)
            items.append(ProbeItem(len(items), category, str(row.prompt), expect="comply" if row.benign else None))
        if not items:
            raise DatasetError(f"{self.path}: no rows")
        return items

    def _category(self, fmt: Format, row: Row, user: dict[str, str]) -> str:
        self.natives[row.native] += 1
        if row.benign:
            return BENIGN
        if self.mapping == "own":
            return f"{fmt.id}:{slug(row.native)}"
        key = norm(row.native)
        mapped = user.get(key) or self._taxonomy.get(key) or user.get("*")
        if mapped:
            return mapped
        name = fmt.labels.get(row.native)
        self.unmapped[f"{row.native} ({name})" if name else row.native or "(none)"] += 1
        return f"{fmt.id}:{slug(row.native)}"

    # -- reports -----------------------------------------------------------------------------
    def describe(self) -> dict:
        items = self.items()
        fmt = self.format
        assert fmt is not None  # known once the file is read
        return {
            "format": fmt.id,
            "title": fmt.title,
            "path": str(self.path),
            "sha256": self.sha256,
            "source": fmt.source,
            "licence": fmt.licence,
            "n_items": len(items),
            "categories": dict(Counter(it.category for it in items)),
            "unmapped": dict(self.unmapped),
        }

    def summarize(self, samples: list[dict]) -> dict:
        return {"dataset": self.describe()}


def _digest(path: Path) -> str | None:
    """The file's SHA-256 (None for a folder), stored with results so an audit names the exact data."""
    import hashlib

    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _getter(raw: dict, lookup: dict[str, str], fmt: Format, where: str):
    def col(name: str, optional: bool = False):
        key = lookup.get(name) or next((lookup[a] for a in fmt.aliases.get(name, ()) if a in lookup), None)
        value = raw.get(key) if key else None
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:
                return ""
            raise DatasetError(f"{where}: column {key or name!r}: empty")
        return value if isinstance(value, list) else str(value)

    return col
