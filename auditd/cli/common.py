"""What every command shares: settings from the command line over the environment, and the one-line
error exit. Kept apart from main.py so the command modules need not import the app that adds them."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)

SETTING_OF_OPTION = {
    "home": "home",
    "db": "db_url",
    "policy": "policy",
    "registry": "registry_dir",
    "port": "metrics_port",
    "host": "metrics_host",
    "poll": "poll_interval_s",
    "device": "device",
}


def load_settings(**cli):
    """Settings with the given command-line options (None: not given) over env and the YAML file."""
    from auditd.settings import Settings

    try:
        return Settings(**{SETTING_OF_OPTION[k]: v for k, v in cli.items() if v is not None})
    except Exception as exc:  # noqa: BLE001  (any bad setting: one line and exit 2)
        fail(f"invalid settings: {' '.join(str(exc).split())}")  # validation errors span lines


def fail(message: str, code: int = 2):
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True)  # one line, however narrow the terminal
    raise typer.Exit(code)
