"""Log lines as JSON objects on request (`SENDGATE_LOG_FORMAT=json`), for log shippers.

One object per line with `time` (ISO 8601, UTC), `level`, `logger` and `message`, plus `exc_info`
when there is a traceback, through python-json-logger's maintained formatter. Fields a caller
passes with `extra=` are dropped except a few bounded ones (`PASSED`), so a stray `extra={"userkey":
...}` or `extra={"text": ...}` can never put personal data into the log: sendgate's own messages
name apps, topics, partitions and offsets, never a userkey or a text (docs/operations.md, "Logs").

The worker gets it through Faust's logging config (`faust.App(logging_config=...)`, read by Faust's
`Worker` when it sets up logging); every other command through `configure()`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _Json

FORMATS = ("text", "json")
PASSED = frozenset({"app", "topic", "partition", "offset", "decision_id", "error"})  # bounded, no personal data


class JsonFormatter(_Json):
    """python-json-logger's formatter with sendgate's field names and only the `PASSED` extras."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S")
        super().__init__(*args, **kwargs)
        self.converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return super().formatTime(record, datefmt) + f".{int(record.msecs):03d}Z"

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_data, record, message_dict)
        for key in [k for k in log_data if k not in ("time", "level", "logger", "message", "exc_info", "stack_info")]:
            if key not in PASSED:
                del log_data[key]


def faust_logging_config(log_format: str) -> dict[str, Any] | None:
    """`faust.App(logging_config=...)`: merged into Faust's own (its level and stream stay), the
    console handler writing JSON lines to stderr; None for the default text format."""
    if log_format == "text":
        return None
    _check(log_format)
    return {
        "merge": True,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    }


def configure(level: str, log_format: str) -> None:
    """Root logging for the commands other than the worker: `logging.basicConfig` in either format."""
    _check(log_format)
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _check(log_format: str) -> None:
    if log_format not in FORMATS:
        raise ValueError(f"SENDGATE_LOG_FORMAT must be text or json, got {log_format!r}")
