"""The bench scripts import auditd inside their functions (so `--help` stays fast), where a moved
or renamed name only fails when someone runs the bench. Every `from auditd... import name` in
bench/ must resolve: the module imports and has the name (or a submodule of that name)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def auditd_imports(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) of every `from auditd... import name` in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "auditd":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names if a.name.split(".")[0] == "auditd"]
    return found


def unresolved(path: Path) -> list[str]:
    missing = []
    for line, module, name in auditd_imports(path):
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{path.name}:{line}: {module}: {exc}")
            continue
        if name and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{path.name}:{line}: {module} has no {name}")
    return missing


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_bench_imports_resolve(script):
    assert unresolved(script) == []


def test_a_moved_name_is_caught(tmp_path):
    script = tmp_path / "bench_x.py"
    script.write_text("def main():\n    from auditd.scheduler.queue import ingest\n    import auditd.nowhere\n")
    assert unresolved(script) == [
        "bench_x.py:2: auditd.scheduler.queue has no ingest",
        "bench_x.py:3: auditd.nowhere: No module named 'auditd.nowhere'",
    ]
