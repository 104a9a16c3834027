"""Structured logs: one JSON object per line in the daemon (journald and log shippers parse it),
plain text in the CLI. Never log secrets: settings hold them as SecretStr."""

from __future__ import annotations

import json
import logging
import sys
import time

from auditd.sanitize import sanitize


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "httpx", "uvicorn.error", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def one_line(exc: BaseException) -> str:
    """An exception as one sanitized log line of at most 500 characters (never a multi-line dump)."""
    text = sanitize(" ".join(str(exc).split())) or type(exc).__name__
    return text[:500]
