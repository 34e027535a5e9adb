"""Logging for every service: one line per event, with the current request id.

Two formats, chosen by ``LOG_FORMAT`` (``CommonSettings.log_format``):

- ``json``: one JSON object per line (``ts``, ``level``, ``service``, ``logger``, ``msg``,
  ``request_id``, then the record's ``extra`` fields), what log collectors read;
- ``text``: ``12:03:04.123 INFO  publisher.service  activation queued  execution_id=…
  request_id=…`` (local time, level, logger, message, then the same fields as ``key=value``),
  for people reading a terminal;
- ``auto`` (the default): ``text`` when stderr is a terminal, ``json`` otherwise.

``request_id_var`` holds the id of the request (or job) being handled: ``PlatformMiddleware``
sets it for each HTTP request, the spawner for each job it runs.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, cast, get_args

LogFormat = Literal["auto", "json", "text"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_RESERVED = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The current request id, then the record's ``extra`` fields."""
    fields: dict[str, Any] = {}
    request_id = request_id_var.get()
    if request_id:
        fields["request_id"] = request_id
    for key, value in vars(record).items():
        if key not in _RESERVED and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **event_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """One readable line per event (a traceback follows on its own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{clock}.{int(record.msecs):03d} {record.levelname:<5} {record.name}  "
        line += record.getMessage()
        fields = event_fields(record)
        if fields:
            line += "  " + " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: Any) -> str:
    """A field's value as one token: as it is when it is one, else as JSON (quoted, escaped)."""
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def parse_log_format(value: str) -> LogFormat:
    """``LOG_FORMAT`` checked: one of ``LOG_FORMATS`` (case-insensitive)."""
    lowered = value.strip().lower()
    if lowered not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT={value!r}: expected one of {', '.join(LOG_FORMATS)}")
    return cast(LogFormat, lowered)


def formatter_for(service: str, log_format: LogFormat, stream: TextIO) -> logging.Formatter:
    """The formatter ``log_format`` means for ``stream`` (``auto``: text on a terminal)."""
    if log_format == "auto":
        log_format = "text" if _is_terminal(stream) else "json"
    return TextFormatter() if log_format == "text" else JsonFormatter(service)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def configure_logging(service: str, level: str = "INFO", log_format: LogFormat = "auto") -> None:
    """Send every log record (ours, uvicorn's, libraries') to stderr, one line each, in
    ``log_format``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(service, log_format, sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv_logger = logging.getLogger(name)
        uv_logger.handlers[:] = []
        uv_logger.propagate = True
