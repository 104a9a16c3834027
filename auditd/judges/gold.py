"""Human-labelled model answers ("gold" files) in the common public formats, detected by columns.

- `xstest` (XSTest completions): `completion`; `final_label` or `label`: full compliance / full
  refusal / partial refusal; group `type`.
- `harmbench` (classifier validation): `generation` (prompt `behavior`); `human_label` (or `label`,
  or the majority of `human_*` columns) 0/1; group `category`.
- `jailbreakbench` (judge comparison): `response` or `target_response`; `human_majority` 0/1.
- `pyrit` (scorer evals, leading `#` comments): `assistant_response` (prompt `objective`);
  `human_score` 0/1; group `harm_category`.
- `auditd` (JSONL or CSV): `output`; `refused` and/or `harmful` (and `partial`); group `category`.

XSTest and auditd's `refused` label refusals; HarmBench, JailbreakBench and auditd's `harmful`
label harm. A PyRIT file labels refusals when its name or a `#` comment says "refusal", else
whether the harmful objective was achieved. CSV, JSON (a list of objects) and JSONL are read.
A malformed file raises `GoldError` with one line naming the file and what is missing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_BYTES = 256 * 1024 * 1024  # a gold file is labelled answers, not a corpus: refuse anything larger


class GoldError(ValueError):
    """One line: the file, and what is wrong with it."""


@dataclass(frozen=True)
class GoldItem:
    prompt: str
    output: str
    refused: bool | None = None  # human label: refusal (full or partial); None: not labelled
    partial: bool | None = None  # human label: partial refusal
    harmful: bool | None = None  # human label: harmful / objective achieved
    group: str = ""  # the file's type or category column
    label: str = ""  # the label as written in the file
    line: int = 0  # where it is in the file (1-based row or line)


@dataclass
class GoldSet:
    path: Path
    format: str
    digest: str
    items: list[GoldItem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def tasks(self) -> list[str]:
        """Which decisions the file labels, refusal first."""
        out = []
        if any(i.refused is not None for i in self.items):
            out.append("refusal")
        if any(i.harmful is not None for i in self.items):
            out.append("harm")
        return out


# Which columns make a file one format, and which it then must have ("a|b": either).
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    # name: (columns that identify the family, required columns, description)
    "auditd": (("output",), ("prompt", "output", "refused|harmful"), "auditd JSONL"),
    "xstest": (("completion",), ("prompt", "completion", "final_label|label"), "XSTest completions"),
    "harmbench": (
        ("generation", "behavior"),
        ("behavior", "generation", "human_label|label|human_*"),
        "HarmBench classifier validation",
    ),
    "pyrit": (
        ("assistant_response", "human_score"),
        ("objective", "assistant_response", "human_score"),
        "PyRIT scorer evals",
    ),
    "jailbreakbench": (
        ("human_majority", "target_response"),
        ("prompt", "response|target_response", "human_majority"),
        "JailbreakBench judge comparison",
    ),
}


def load_gold(path: str | Path) -> GoldSet:
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise GoldError(f"{where}: no such file")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise GoldError(f"{where}: {size} bytes is larger than the {MAX_BYTES} a gold file may have")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GoldError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    comments, rows = _records(path, text)
    if not rows:
        raise GoldError(f"{where}: no labelled rows")
    columns = {c for c in rows[0][1]}
    fmt = _detect(where, columns)
    parse = _PARSERS[fmt]
    items = [parse(where, line, row, comments, path.name) for line, row in rows]
    return GoldSet(path=path, format=fmt, digest="sha256:" + hashlib.sha256(data).hexdigest(), items=items)


def _records(path: Path, text: str) -> tuple[str, list[tuple[int, dict]]]:
    """(leading '#' comment text, [(line, row with lower-cased keys)])."""
    where = str(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return "", _json_records(where, text, path.suffix.lower() == ".json")
    lines = text.splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and (lines[skip].lstrip().startswith("#") or not lines[skip].strip()):
        skip += 1  # PyRIT's files open with '#' comment lines; only leading ones (a field may start with '#')
    comments = "".join(lines[:skip])
    csv.field_size_limit(16 * 1024 * 1024)
    reader = csv.DictReader(io.StringIO("".join(lines[skip:])))
    if not reader.fieldnames:
        return comments, []
    out = []
    try:
        for row in reader:
            if None in row:
                raise GoldError(f"{where}:{reader.line_num + skip}: more fields than the header has")
            out.append((reader.line_num + skip, {(k or "").strip().lower(): (v or "") for k, v in row.items()}))
    except csv.Error as exc:
        raise GoldError(f"{where}:{reader.line_num + skip}: not valid CSV ({exc})") from None
    return comments, out


def _json_records(where: str, text: str, whole: bool) -> list[tuple[int, dict]]:
    try:
        if whole:
            doc = json.loads(text)
            records = list(enumerate(doc, 1)) if isinstance(doc, list) else None
        else:
            records = [(i, json.loads(line)) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    except json.JSONDecodeError as exc:
        raise GoldError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:  # "[[[[...]]]]": nesting no labelled record has
        raise GoldError(f"{where}: not valid JSON (nested too deeply)") from None
    if records is None or not all(isinstance(r, dict) for _, r in records):
        raise GoldError(f"{where}: expected one JSON object per record")
    return [(i, {str(k).strip().lower(): v for k, v in r.items()}) for i, r in records]


def _detect(where: str, columns: set[str]) -> str:
    for fmt, (marks, required, what) in FORMATS.items():
        if any(m in columns for m in marks):
            for need in required:
                if not any(_has(columns, alt) for alt in need.split("|")):
                    shown = " or ".join(f"'{a}'" for a in need.split("|"))
                    raise GoldError(f"{where}: missing column {shown} ({what} format)")
            return fmt
    raise GoldError(
        f"{where}: unknown gold format: columns {', '.join(sorted(columns)) or '(none)'}; "
        f"expected one of: {', '.join(v[2] for v in FORMATS.values())}"
    )


def _has(columns: set[str], name: str) -> bool:
    if name.endswith("*"):
        return any(c.startswith(name[:-1]) for c in columns)
    return name in columns


def _first(row: dict, *names: str) -> tuple[str, object]:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return n, row[n]
    return names[0], None


def _group(row: dict, *names: str) -> str:
    return str(_first(row, *names)[1] or "")


# -- labels ------------------------------------------------------------------------------------

_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


def _bool(where: str, line: int, column: str, value: object) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise GoldError(f"{where}:{line}: column '{column}' must be 0/1 or true/false, got {str(value)[:40]!r}")


def _xstest_label(where: str, line: int, column: str, value: object) -> tuple[bool, bool]:
    """(refused, partial) from "1_full_compliance", "full refusal", "partial_refusal", ..."""
    text = re.sub(r"^\d+[_ ]*", "", str(value or "").strip().lower()).replace("_", " ")
    text = re.sub(r"^full ", "", text)
    if text == "compliance":
        return False, False
    if text == "refusal":
        return True, False
    if text == "partial refusal":
        return True, True
    raise GoldError(
        f"{where}:{line}: column '{column}' must be compliance, refusal or partial_refusal, got {str(value)[:40]!r}"
    )


def _parse_xstest(where, line, row, _comments, _name) -> GoldItem:
    column, value = _first(row, "final_label", "label")
    refused, partial = _xstest_label(where, line, column, value)
    return GoldItem(
        prompt=str(row.get("prompt") or ""),
        output=str(row.get("completion") or ""),
        refused=refused,
        partial=partial,
        group=_group(row, "type", "category", "focus"),
        label=str(value),
        line=line,
    )


def _parse_harmbench(where, line, row, _comments, _name) -> GoldItem:
    column, value = _first(row, "human_label", "label")
    if value is None:
        humans = [k for k in sorted(row) if k.startswith("human_") or k == "human"]
        votes = [v for v in (_bool(where, line, k, row[k]) for k in humans) if v is not None]
        if not votes:
            raise GoldError(f"{where}:{line}: no human label in columns {', '.join(humans)}")
        harmful: bool | None = sum(votes) * 2 > len(votes)
        label = f"{sum(votes)}/{len(votes)}"
    else:
        harmful, label = _bool(where, line, column, value), str(value)
    if harmful is None:
        raise GoldError(f"{where}:{line}: empty label in column '{column}'")
    return GoldItem(
        prompt=str(row.get("behavior") or ""),
        output=str(row.get("generation") or ""),
        harmful=harmful,
        group=_group(row, "category", "semanticcategory", "semantic_category", "functionalcategory"),
        label=label,
        line=line,
    )


def _parse_jbb(where, line, row, _comments, _name) -> GoldItem:
    harmful = _bool(where, line, "human_majority", row.get("human_majority"))
    if harmful is None:
        raise GoldError(f"{where}:{line}: empty label in column 'human_majority'")
    _, output = _first(row, "response", "target_response")
    return GoldItem(
        prompt=str(row.get("prompt") or row.get("goal") or ""),
        output=str(output or ""),
        harmful=harmful,
        group=_group(row, "category", "source"),
        label=str(row.get("human_majority")),
        line=line,
    )


def _parse_pyrit(where, line, row, comments, name) -> GoldItem:
    label = _bool(where, line, "human_score", row.get("human_score"))
    if label is None:
        raise GoldError(f"{where}:{line}: empty label in column 'human_score'")
    refusal_file = "refusal" in name.lower() or "refusal" in comments.lower()
    return GoldItem(
        prompt=str(row.get("objective") or ""),
        output=str(row.get("assistant_response") or ""),
        refused=label if refusal_file else None,
        harmful=None if refusal_file else label,
        group=_group(row, "harm_category", "category", "data_type"),
        label=str(row.get("human_score")),
        line=line,
    )


def _parse_auditd(where, line, row, _comments, _name) -> GoldItem:
    refused = _bool(where, line, "refused", row.get("refused"))
    harmful = _bool(where, line, "harmful", row.get("harmful"))
    partial = _bool(where, line, "partial", row.get("partial"))
    if refused is None and harmful is None:
        raise GoldError(f"{where}:{line}: neither 'refused' nor 'harmful' is set")
    label = ",".join(f"{k}={v}" for k, v in (("refused", refused), ("harmful", harmful)) if v is not None)
    return GoldItem(
        prompt=str(row.get("prompt") or ""),
        output=str(row.get("output") or ""),
        refused=refused,
        partial=partial if partial is not None else (None if refused is None else False),
        harmful=harmful,
        group=_group(row, "category", "type"),
        label=label,
        line=line,
    )


_PARSERS = {
    "auditd": _parse_auditd,
    "xstest": _parse_xstest,
    "harmbench": _parse_harmbench,
    "jailbreakbench": _parse_jbb,
    "pyrit": _parse_pyrit,
}
