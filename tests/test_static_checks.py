"""The static checks CI enforces, run from the venv this interpreter belongs to: ruff (lint and
format), import-linter (the layer contracts in pyproject.toml) and mypy on auditd/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(tool: str, *args: str, timeout: float = 600) -> None:
    exe = BIN / tool
    if not exe.exists():
        pytest.fail(f"{tool} is not installed in {BIN} (pip install -e '.[test]')")
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(
            f"{tool} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}", pytrace=False
        )


def test_ruff_lint():
    run("ruff", "check", "--no-cache", ".")


def test_ruff_format():
    run("ruff", "format", "--check", "--no-cache", ".")


def test_import_layers():
    run("lint-imports", "--no-cache")


@pytest.mark.slow
def test_mypy():
    run("mypy", "auditd")


def module_cycles(package: str) -> list[list[str]]:
    """Strongly connected groups of modules in `package`'s import graph (function-local imports
    included); migrations are alembic scripts, never imported by the package."""
    import grimp

    graph = grimp.build_graph(package)
    modules = sorted(m for m in graph.modules if ".migrations" not in m)
    edges = {m: sorted(x for x in graph.find_modules_directly_imported_by(m) if x in modules) for m in modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in edges[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            group = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in modules:
        if m not in order:
            visit(m)
    return cycles


def test_no_import_cycle():
    assert module_cycles("auditd") == []


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path, monkeypatch):
    pkg = tmp_path / "knotted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from knotted import b\n")
    (pkg / "b.py").write_text("from knotted import c\n")
    (pkg / "c.py").write_text("import knotted.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_cycles("knotted") == [["knotted.a", "knotted.b", "knotted.c"]]
