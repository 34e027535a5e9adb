"""``faas fn ...``, ``faas executions ...`` and ``faas logs``: the requests they send, what they
print, the long poll of ``executions wait``, and ``--help`` on every command."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from typer.main import get_command

from faas_cli.app import app
from tests.unit.cli.conftest import Cli, FakeGateway, json_response
from tests.unit.cli.test_invoke import record

FUNCTIONS = "/registry/functions"
EXECUTION = "/publisher/executions/" + "0" * 32


def function(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": "f-1",
        "name": "hello",
        "description": "",
        "image": "hello-python:latest",
        "timeout_seconds": 30,
        "memory_mb": 128,
        "env": {},
        "created_at": "2026-12-03T11:00:00+00:00",
        "updated_at": "2026-12-03T11:00:00+00:00",
    }
    return values | fields


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_fn_create_sends_the_fields_given(logged_in: Cli, gateway: FakeGateway) -> None:
    created = function(timeout_seconds=10, env={"GREETING": "hi", "EMPTY": ""})
    gateway.answer("POST", FUNCTIONS, json_response(201, created))

    result = logged_in(
        "fn", "create", "hello", "--image", "hello-python:latest", "--timeout", "10",
        "--env", "GREETING=hi", "--env", "EMPTY=",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert body_of(gateway.requests[0]) == {
        "name": "hello",
        "image": "hello-python:latest",
        "timeout_seconds": 10,
        "env": {"GREETING": "hi", "EMPTY": ""},
    }
    assert "hello-python:latest" in result.stdout
    assert "EMPTY= GREETING=hi" in result.stdout


@pytest.mark.parametrize("env", ["NOEQUALS", "=value"])
def test_an_env_that_is_not_key_value_is_a_usage_error(
    logged_in: Cli, gateway: FakeGateway, env: str
) -> None:
    result = logged_in("fn", "create", "hello", "--image", "x:1", "--env", env)

    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.stderr
    assert gateway.requests == []


def test_fn_update_patches_only_what_is_given(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("PATCH", f"{FUNCTIONS}/hello", json_response(200, function(memory_mb=256)))

    result = logged_in("fn", "update", "hello", "--memory", "256")
    nothing = logged_in("fn", "update", "hello")

    assert result.exit_code == 0, result.output
    assert body_of(gateway.requests[0]) == {"memory_mb": 256}
    assert nothing.exit_code == 2
    assert len(gateway.requests) == 1


def test_fn_list_get_and_delete(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("GET", FUNCTIONS, json_response(200, [function(), function(name="bye")]))
    gateway.answer("GET", f"{FUNCTIONS}/hello", json_response(200, function()))
    gateway.answer("DELETE", f"{FUNCTIONS}/hello", httpx.Response(204))
    gone = {"detail": "Function not found", "code": "function_not_found"}
    gateway.answer("GET", f"{FUNCTIONS}/bye", json_response(404, gone))

    listed = logged_in("fn", "list")
    as_json = logged_in("--json", "fn", "list")
    got = logged_in("fn", "get", "hello")
    deleted = logged_in("fn", "delete", "hello")
    missing = logged_in("fn", "get", "bye")

    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["NAME", "hello", "bye"]
    assert [f["name"] for f in json.loads(as_json.stdout)] == ["hello", "bye"]
    assert "hello-python:latest" in got.stdout
    assert deleted.stdout == "deleted hello\n"
    assert missing.exit_code == 1
    assert missing.stderr == "error: function_not_found: Function not found\n"


def test_executions_list_shows_whole_ids(logged_in: Cli, gateway: FakeGateway) -> None:
    records = [record(execution_id="a" * 32), record("failed", execution_id="b" * 32)]
    gateway.answer("GET", "/publisher/executions", json_response(200, {"executions": records}))

    result = logged_in("executions", "list", "--function", "hello", "--limit", "5")

    assert result.exit_code == 0, result.output
    assert dict(gateway.requests[0].url.params) == {"function": "hello", "limit": "5"}
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["EXECUTION", "FUNCTION", "STATUS", "CREATED", "DURATION_MS"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["a" * 32, "hello", "succeeded"],
        ["b" * 32, "hello", "failed"],
    ]


def test_executions_get_and_logs(logged_in: Cli, gateway: FakeGateway) -> None:
    done = record(result="HI", logs="first\nsecond")
    gateway.answer("GET", EXECUTION, json_response(200, done))

    got = logged_in("executions", "get", "0" * 32)
    logs = logged_in("logs", "0" * 32)
    as_json = logged_in("--json", "logs", "0" * 32)

    assert "succeeded" in got.stdout
    assert "HI" in got.stdout
    assert logs.stdout == "first\nsecond\n"
    assert json.loads(as_json.stdout) == done


def test_executions_wait_long_polls_until_the_record_is_final(
    logged_in: Cli, gateway: FakeGateway
) -> None:
    gateway.answer(
        "GET",
        EXECUTION,
        json_response(200, record("running")),
        json_response(200, record(result="DONE", logs="took a while\n")),
    )

    result = logged_in("executions", "wait", "0" * 32, "--timeout", "120")

    assert result.exit_code == 0, result.output
    assert result.stdout == "DONE\n"
    assert result.stderr == "took a while\n"
    waits = [float(request.url.params["wait"]) for request in gateway.requests]
    assert len(waits) == 2
    assert all(0 < wait <= 60 for wait in waits)


def test_executions_wait_answers_a_failure_like_invoke(
    logged_in: Cli, gateway: FakeGateway
) -> None:
    timed_out = record("timed_out", error="timed_out", detail="Killed after its 10 s timeout")
    gateway.answer("GET", EXECUTION, json_response(200, timed_out))

    result = logged_in("executions", "wait", "0" * 32)

    assert result.exit_code == 5
    assert result.stderr == "error: timed_out: Killed after its 10 s timeout\n"


def test_executions_wait_gives_up_after_its_timeout(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("GET", EXECUTION, json_response(200, record("queued")))

    result = logged_in("executions", "wait", "0" * 32, "--timeout", "0")

    assert result.exit_code == 5
    assert result.stderr == f"error: execution {'0' * 32} is still queued after 0 s\n"
    assert "wait" not in gateway.requests[0].url.params


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += commands(command, (*path, name))
    return found


def test_every_command_has_help(cli: Cli) -> None:
    tree = commands(get_command(app))
    assert ("fn", "create") in tree
    assert ("executions", "wait") in tree
    for path in tree:
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: faas" in result.stdout
