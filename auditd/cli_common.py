"""What every `auditd` command module shares: the one-line error exit and settings from options.

Kept apart from auditd.cli so command modules (cli_t2i, cli_judges) import it without importing
the command line that registers them (no import cycle)."""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console

err = Console(stderr=True)

# CLI option name -> Settings field.
SETTINGS_KEYS = {"home": "home", "db": "db_url", "policy": "policy", "registry": "registry_dir",
                 "port": "metrics_port", "host": "metrics_host", "poll": "poll_interval_s", "device": "device"}


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however narrow the terminal
    raise typer.Exit(code)


def settings_from_options(**cli: Any) -> Any:
    """Settings from the options given on the command line (None: not given); invalid ones exit."""
    from auditd.settings import Settings

    try:
        return Settings(**{SETTINGS_KEYS[k]: v for k, v in cli.items() if v is not None})
    except Exception as exc:
        fail(f"invalid settings: {exc}")
