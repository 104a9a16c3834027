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
        pytest.fail(f"{tool} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                    pytrace=False)


def test_ruff_lint():
    run("ruff", "check", "--no-cache", ".")


def test_ruff_format():
    run("ruff", "format", "--check", "--no-cache", ".")


def test_import_layers():
    run("lint-imports", "--no-cache")


@pytest.mark.slow
def test_mypy():
    run("mypy", "auditd")
