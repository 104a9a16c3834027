"""The `auditd` command line: commands (main.py), their terminal rendering (render.py), the demo
(demo*.py) and the release gate (gate.py). `app` is the console script's entry point."""

from auditd.cli.main import app, main

__all__ = ["app", "main"]
