"""How ``roost serve`` logs (text lines or JSON objects, on stderr) and reports bad settings.

JSON lines carry ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, any ``extra``
fields the caller gave (the access log gives ``method``, ``path``, ``status``, ``duration_ms``,
``client``), and ``exception`` with the traceback as one string: one object per line, whatever
the message holds, so that a log shipper never has to guess where a record ends.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, ParamSpec, TypeVar

import orjson
import typer

from roost.config import Settings
from roost.core import redaction
from roost.errors import ConfigError, RoostError

P = ParamSpec("P")
T = TypeVar("T")

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS: Final = ("debug", "info", "warning", "error", "critical")

# What every LogRecord has: anything else on a record came from ``extra=`` and is logged too.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(settings: Settings) -> None:
    """Set the root logger's level and format from the settings (a bad value: ConfigError)."""
    level = settings.log_level.strip().lower()
    if level not in LEVELS:
        raise ConfigError(f"ROOST_LOG_LEVEL: {settings.log_level!r} is not one of {LEVELS}")
    log_format = settings.log_format.strip().lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(
            f"ROOST_LOG_FORMAT: {settings.log_format!r} is not one of {', '.join(LOG_FORMATS)}"
        )
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Credentials never reach the log, whoever logs them (uvicorn logs WebSocket query strings).
    redaction.install()
    # Alembic narrates every migration step at INFO; Roost logs the one line that matters.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


def one_line_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Report a configuration error as one ``error:`` line on stderr and exit with status 2 (any
    other deliberate error: status 1), instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except RoostError as exc:
            sys.stderr.write(f"error: {exc.detail}\n")
            raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None

    return run
