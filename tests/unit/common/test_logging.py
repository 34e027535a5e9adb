"""JSON-lines logging: one object per line, with the service, the level and the request id."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from faas_common.logging import JsonFormatter, configure_logging, request_id_var


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
