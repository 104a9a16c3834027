"""The package layout's one rule a type checker cannot see: runtime code never imports the test
builders in auditd/testing/ (they are for tests and benches; the demo's own models live in cli/)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "auditd"


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_runtime_code_does_not_import_the_test_builders():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[:2] == ["auditd", "testing"])
        for p in ROOT.rglob("*.py")
        if "testing" not in p.relative_to(ROOT).parts[:1]
    }
    assert not {k: v for k, v in offenders.items() if v}
    assert imported_modules(ROOT / "cli" / "demo_models.py")  # the scan reads real imports
