"""Reading a data set's rows from the user's files: CSV/TSV, JSON Lines, JSON, Parquet, a folder
saved with Hugging Face `datasets.save_to_disk`, or HEx-PHI's headerless category_<n>.csv files.

Rows come out as (row number, {column: value}) where the row number is what the user sees in an
editor (the CSV line of the record, the JSONL line) or the 1-based record number otherwise.
Nothing is downloaded; files past MAX_BYTES or MAX_ROWS are refused rather than read halfway.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

from auditd.datasets.formats import DatasetError

MAX_BYTES = 512 * 1024 * 1024
MAX_ROWS = 500_000
HEX_PHI_FILE = re.compile(r"^category_(\d+)\.csv$", re.IGNORECASE)

RowIter = Iterator[tuple[int, dict]]


def hex_phi_files(path: Path) -> list[tuple[str, Path]]:
    """(category number, file) for a HEx-PHI folder or one of its files; [] if it is not HEx-PHI."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    found = [(m.group(1), f) for f in files if (m := HEX_PHI_FILE.match(f.name)) and f.is_file()]
    return sorted(found, key=lambda t: int(t[0]))


def is_hf_saved(path: Path) -> bool:
    return path.is_dir() and any((path / n).is_file() for n in ("dataset_info.json", "dataset_dict.json", "state.json"))


def read_rows(path: Path, split: str | None = None) -> tuple[list[str], RowIter, str]:
    """(column names, rows, kind); kind is "hex_phi" for HEx-PHI files, else the file type."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if hex_phi_files(path):
        return ["prompt", "category"], _hex_phi_rows(path), "hex_phi"
    if is_hf_saved(path):
        return _hf_rows(path, split)
    if path.is_dir():
        raise DatasetError(
            f"{path}: a folder that is neither HEx-PHI category_<n>.csv files nor a `save_to_disk` data set"
        )
    if path.stat().st_size > MAX_BYTES:
        raise DatasetError(f"{path}: larger than {MAX_BYTES // 2**20} MiB")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _parquet_rows(path)
    raise DatasetError(f"{path}: unknown file type {suffix!r} (csv, tsv, jsonl, json, parquet, or a saved folder)")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text") from None


def _csv_rows(path: Path, delimiter: str) -> tuple[list[str], RowIter, str]:
    lines = _text(path).splitlines(keepends=True)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}:1: empty file") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}:1: unreadable CSV header ({exc})") from None
    header = [h.strip() for h in header]

    def rows() -> RowIter:
        n = 0
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetError(f"{path}:{start}: unreadable CSV row ({exc})") from None
            if not any(v.strip() for v in values):
                continue
            n += 1
            if n > MAX_ROWS:
                raise DatasetError(f"{path}:{start}: more than {MAX_ROWS} rows")
            if len(values) > len(header):
                raise DatasetError(f"{path}:{start}: {len(values)} values for {len(header)} columns")
            yield start, dict(zip(header, values))

    return header, rows(), "csv"


def _jsonl_rows(path: Path) -> tuple[list[str], RowIter, str]:
    parsed = []
    for lineno, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{path}:{lineno}: invalid JSON ({exc.args[0].split(':')[0]})") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{lineno}: a JSON object per line expected")
        parsed.append((lineno, row))
        if len(parsed) > MAX_ROWS:
            raise DatasetError(f"{path}:{lineno}: more than {MAX_ROWS} rows")
    if not parsed:
        raise DatasetError(f"{path}:1: empty file")
    return list(parsed[0][1]), iter(parsed), "jsonl"


def _json_rows(path: Path) -> tuple[list[str], RowIter, str]:
    try:
        data = json.loads(_text(path))
    except ValueError as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}: the one list inside
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list) or not data or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: a JSON list of objects expected")
    if len(data) > MAX_ROWS:
        raise DatasetError(f"{path}: more than {MAX_ROWS} rows")
    return list(data[0]), iter(enumerate(data, 1)), "json"


def _optional(module: str, path: Path):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DatasetError(f"{path}: reading it needs the `datasets` package (pip install 'auditd[grpo]')") from None


def _parquet_rows(path: Path) -> tuple[list[str], RowIter, str]:
    pq = _optional("pyarrow.parquet", path)

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path}: unreadable Parquet ({' '.join(str(exc).split())[:200]})") from None
    if table.num_rows > MAX_ROWS:
        raise DatasetError(f"{path}: more than {MAX_ROWS} rows")
    return table.column_names, iter(enumerate(table.to_pylist(), 1)), "parquet"


def _hf_rows(path: Path, split: str | None) -> tuple[list[str], RowIter, str]:
    datasets = _optional("datasets", path)

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable saved data set ({' '.join(str(exc).split())[:200]})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None and len(names) == 1:
            split = names[0]
        if split not in ds:
            raise DatasetError(f"{path}: choose `split:` among {', '.join(names)}")
        ds = ds[split]
    if len(ds) > MAX_ROWS:
        raise DatasetError(f"{path}: more than {MAX_ROWS} rows")
    return list(ds.column_names), iter(enumerate(ds, 1)), "hf"


def _hex_phi_rows(path: Path) -> RowIter:
    for number, file in hex_phi_files(path):
        # HEx-PHI's files have no header: one prompt per record (quoted when it holds commas).
        for lineno, values in enumerate(csv.reader(_text(file).splitlines()), 1):
            if values and any(v.strip() for v in values):
                yield (
                    lineno,
                    {
                        "prompt": ",".join(values) if len(values) > 1 else values[0],
                        "category": number,
                        "__file__": str(file),
                    },
                )
