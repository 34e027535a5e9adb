"""``faas invoke``: the argument (given, or stdin), the result exactly on stdout, the logs on
stderr, ``--async``, ``--idempotency-key``, ``--json``, and one exit status per kind of failure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.cli.conftest import Cli, FakeGateway, json_response

PUBLISH = "/publisher/publish"


def record(status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "execution_id": "0" * 32,
        "function": "hello",
        "status": status,
        "result": None,
        "exit_code": None,
        "logs": None,
        "error": None,
        "detail": None,
        "duration_ms": 12.5,
        "timings": {},
        "created_at": 1_790_000_000.0,
    }
    return values | fields


def sent_body(gateway: FakeGateway) -> dict[str, Any]:
    [request] = gateway.sent("POST", PUBLISH)
    body: dict[str, Any] = json.loads(request.content)
    return body


def test_the_result_is_printed_exactly_and_the_logs_apart(
    logged_in: Cli, gateway: FakeGateway
) -> None:
    result_text = "  HELLO\n\x1b[1mWORLD\x1b[0m  "
    done = record(result=result_text, exit_code=0, logs="starting\nstopping\n")
    gateway.answer("POST", PUBLISH, json_response(200, done))

    result = logged_in("invoke", "hello", "hello world")

    assert result.exit_code == 0, result.output
    assert result.stdout == result_text + "\n"
    assert result.stderr == "starting\nstopping\n"
    assert sent_body(gateway) == {"name": "hello", "argument": "hello world"}


@pytest.mark.parametrize("args", [(), ("-",)])
def test_no_argument_or_a_dash_reads_stdin(
    logged_in: Cli, gateway: FakeGateway, args: tuple[str, ...]
) -> None:
    gateway.answer("POST", PUBLISH, json_response(200, record(result="ok")))

    result = logged_in("invoke", "hello", *args, input="line one\nline two\n")

    assert result.exit_code == 0, result.output
    assert sent_body(gateway)["argument"] == "line one\nline two"


def test_async_prints_the_execution_id(logged_in: Cli, gateway: FakeGateway) -> None:
    accepted = {"execution_id": "1" * 32, "status_url": f"/publisher/executions/{'1' * 32}"}
    gateway.answer("POST", PUBLISH, json_response(202, accepted))

    result = logged_in("invoke", "hello", "x", "--async", "--idempotency-key", "order-42")

    assert result.exit_code == 0, result.output
    assert result.stdout == "1" * 32 + "\n"
    assert sent_body(gateway) == {"name": "hello", "argument": "x", "async": True}
    assert gateway.requests[0].headers["Idempotency-Key"] == "order-42"


def test_json_prints_the_record(logged_in: Cli, gateway: FakeGateway) -> None:
    done = record(result="HI", logs="log line")
    gateway.answer("POST", PUBLISH, json_response(200, done))

    result = logged_in("--json", "invoke", "hello", "hi")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == done
    assert result.stderr == ""


def test_a_failed_function_prints_its_error_and_logs(logged_in: Cli, gateway: FakeGateway) -> None:
    failed = record("failed", exit_code=3, error="function_failed", logs="Traceback: boom\n")
    body = {
        "detail": "The function exited with a non-zero status",
        "code": "function_failed",
        "execution": failed,
    }
    gateway.answer("POST", PUBLISH, json_response(502, body))

    result = logged_in("invoke", "hello", "x")

    assert result.exit_code == 4
    assert result.stdout == ""
    assert result.stderr == (
        "Traceback: boom\nerror: function_failed: The function exited with a non-zero status\n"
    )


def test_json_prints_the_error_answer_too(logged_in: Cli, gateway: FakeGateway) -> None:
    body = {"detail": "The activation timed out", "code": "timed_out", "execution": record()}
    gateway.answer("POST", PUBLISH, json_response(504, body))

    result = logged_in("--json", "invoke", "hello", "x")

    assert result.exit_code == 5
    assert json.loads(result.stdout) == body
    assert result.stderr == "error: timed_out: The activation timed out\n"


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (502, "output_too_large", 4),
        (502, "image_unavailable", 4),
        (504, "timed_out", 5),
        (429, "concurrency_limit", 6),
        (401, "invalid_token", 3),
        (403, "image_not_allowed", 3),
        (404, "function_not_found", 1),
        (413, "argument_too_large", 1),
        (503, "runtime_unavailable", 1),
    ],
)
def test_each_kind_of_failure_has_its_exit_status(
    logged_in: Cli, gateway: FakeGateway, status: int, code: str, exit_code: int
) -> None:
    gateway.answer("POST", PUBLISH, json_response(status, {"detail": "Said so", "code": code}))

    result = logged_in("invoke", "hello", "x")

    assert result.exit_code == exit_code
    assert result.stderr.startswith(f"error: {code}: Said so")


def test_a_server_error_names_the_request_id(logged_in: Cli, gateway: FakeGateway) -> None:
    down = {"detail": "The activation runtime is unavailable", "code": "runtime_unavailable"}
    gateway.answer("POST", PUBLISH, json_response(503, down))

    result = logged_in("invoke", "hello", "x")

    request_id = gateway.requests[0].headers["X-Request-ID"]
    assert result.exit_code == 1
    assert result.stderr == (
        "error: runtime_unavailable: The activation runtime is unavailable\n"
        f"request id: {request_id}\n"
    )


def test_bad_usage_is_status_2(logged_in: Cli, gateway: FakeGateway) -> None:
    result = logged_in("invoke")

    assert result.exit_code == 2
    assert "Missing argument" in result.stderr
    assert gateway.requests == []


def test_not_logged_in_asks_for_a_login(cli: Cli, gateway: FakeGateway) -> None:
    result = cli("invoke", "hello", "x")

    assert result.exit_code == 3
    assert "run `faas login USERNAME`" in result.stderr
    assert gateway.requests == []


def test_a_validation_error_lists_its_problems(logged_in: Cli, gateway: FakeGateway) -> None:
    invalid = {
        "detail": [{"loc": ["body", "name"], "msg": "String should match pattern"}],
        "code": "validation_error",
    }
    gateway.answer("POST", PUBLISH, json_response(422, invalid))

    result = logged_in("invoke", "bad name", "x")

    assert result.exit_code == 1
    assert result.stderr == "error: validation_error: body.name: String should match pattern\n"
