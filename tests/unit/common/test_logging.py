"""Logging: JSON lines (one object per line, with the service, the level and the request id) or
readable text lines, chosen by LOG_FORMAT or by whether stderr is a terminal."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from faas_common.logging import (
    JsonFormatter,
    LogFormat,
    TextFormatter,
    configure_logging,
    formatter_for,
    request_id_var,
)
from faas_common.settings import CommonSettings


@pytest.fixture
def stream_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-service"))
    logger = logging.getLogger("faas.test.json")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.handlers[:] = []
        logger.propagate = True


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_one_json_object_per_line(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logger.info("first %s", "event")
    logger.warning("second\nevent spanning lines")
    first, second = lines(stream)
    assert first["msg"] == "first event"
    assert first["level"] == "info"
    assert first["service"] == "test-service"
    assert first["logger"] == "faas.test.json"
    assert datetime.fromisoformat(first["ts"]).tzinfo is not None
    assert second["msg"] == "second\nevent spanning lines"
    assert second["level"] == "warning"


def test_request_id_is_included_while_set(
    stream_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = stream_logger
    logger.info("before")
    token = request_id_var.set("req-123")
    try:
        logger.info("during")
    finally:
        request_id_var.reset(token)
    logger.info("after")
    before, during, after = lines(stream)
    assert "request_id" not in before
    assert during["request_id"] == "req-123"
    assert "request_id" not in after


def test_extra_fields_become_keys(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logger.info(
        "activation finished",
        extra={"execution_id": "e-1", "duration_ms": 12.5, "where": Path("/tmp/x")},
    )
    (entry,) = lines(stream)
    assert entry["execution_id"] == "e-1"
    assert entry["duration_ms"] == 12.5
    assert entry["where"] == "/tmp/x"
    for internal in ("args", "levelno", "pathname", "msecs", "exc_info"):
        assert internal not in entry


def test_exception_traceback_stays_on_one_line(
    stream_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = stream_logger
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (entry,) = lines(stream)
    assert entry["level"] == "error"
    assert "Traceback" in entry["exc"]
    assert "ValueError: boom" in entry["exc"]


def test_non_ascii_is_kept_readable(stream_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = stream_logger
    logger.info("caf\u00e9 \u2713")
    assert "caf\u00e9 \u2713" in stream.getvalue()
    assert lines(stream)[0]["msg"] == "caf\u00e9 \u2713"


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn_state = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (saved, propagate) in uvicorn_state.items():
            logging.getLogger(name).handlers[:] = saved
            logging.getLogger(name).propagate = propagate


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_sends_everything_to_stderr_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("auth-service", "debug")
    root = logging.getLogger()
    assert root.level == logging.DEBUG
    assert len(root.handlers) == 1
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("some.library").debug("library detail")
    captured = capsys.readouterr()
    assert captured.out == ""
    entries = [json.loads(line) for line in captured.err.splitlines()]
    assert [entry["logger"] for entry in entries] == ["uvicorn.error", "some.library"]
    assert all(entry["service"] == "auth-service" for entry in entries)


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_twice_keeps_one_handler() -> None:
    configure_logging("svc", "INFO")
    configure_logging("svc", "WARNING")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    assert root.level == logging.WARNING


# --- Text lines and the format's choice -------------------------------------------------------

TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<level>\S+) +(?P<logger>\S+)  (?P<rest>.*)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def text_of(record: logging.LogRecord) -> str:
    return TextFormatter().format(record)


def make_record(msg: str, level: int = logging.INFO, **extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "publisher.service", "levelno": level, "levelname": logging.getLevelName(level)}
    )
    record.msg = msg
    record.__dict__.update(extra)
    return record


def test_a_text_line_has_time_level_logger_message_then_fields() -> None:
    token = request_id_var.set("abc-123")
    try:
        line = text_of(make_record("activation queued", execution_id="e-1", queue_ms=1.5))
    finally:
        request_id_var.reset(token)
    match = TEXT_LINE.match(line)
    assert match is not None, line
    assert (match["level"], match["logger"]) == ("INFO", "publisher.service")
    assert match["rest"] == "activation queued  request_id=abc-123 execution_id=e-1 queue_ms=1.5"
    assert "\n" not in line


def test_text_levels_line_up() -> None:
    info = text_of(make_record("x", logging.INFO))
    error = text_of(make_record("x", logging.ERROR))
    assert info.index("publisher.service") == error.index("publisher.service")


def test_text_values_that_are_not_one_word_are_quoted() -> None:
    line = text_of(
        make_record("m", error="no such image", timings={"run": 2.0}, empty="", code=None)
    )
    assert line.endswith(' error="no such image" timings={"run":2.0} empty="" code=null')


def test_a_text_line_without_fields_is_the_message_alone() -> None:
    assert TEXT_LINE.match(text_of(make_record("stopped")))["rest"] == "stopped"  # type: ignore[index]


def test_a_text_traceback_follows_its_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = make_record("failed", logging.ERROR)
        record.exc_info = sys.exc_info()
    first, *rest = text_of(record).splitlines()
    assert TEXT_LINE.match(first)
    assert rest[-1] == "ValueError: boom"


@pytest.mark.parametrize(
    ("log_format", "terminal", "expected"),
    [
        ("auto", True, TextFormatter),
        ("auto", False, JsonFormatter),
        ("json", True, JsonFormatter),
        ("text", False, TextFormatter),
    ],
)
def test_the_format_follows_the_terminal_unless_chosen(
    log_format: LogFormat, terminal: bool, expected: type[logging.Formatter]
) -> None:
    stream = Terminal() if terminal else io.StringIO()
    assert type(formatter_for("svc", log_format, stream)) is expected


@pytest.mark.usefixtures("restore_root_logging")
def test_configure_logging_writes_text_lines_when_asked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("spawner-service", "INFO", "text")
    logging.getLogger("spawner.worker").info("finished", extra={"status": "succeeded"})
    (line,) = capsys.readouterr().err.splitlines()
    match = TEXT_LINE.match(line)
    assert match is not None, line
    assert match["rest"] == "finished  status=succeeded"


def test_log_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CommonSettings().log_format == "auto"
    monkeypatch.setenv("LOG_FORMAT", "Text")
    assert CommonSettings().log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(ValidationError, match="LOG_FORMAT='yaml': expected one of auto, json"):
        CommonSettings()
