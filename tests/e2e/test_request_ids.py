"""End to end: a call's ``X-Request-ID`` through the local stack (``./bin/run.sh``), with the real
Docker engine and nats-server.

The id a client sends comes back on the answer (a function's failure included), is kept in the
execution record, and is on every line the spawner logs about the activation; a call without one
gets one made up, the same on the answer and in the record. The stack's output is not a
terminal, so its logs are JSON lines, unless ``LOG_FORMAT=text`` asks for readable ones.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.stack import Stack, User, register, running_stack
from tests.support.images import busybox_image
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

HTTP_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("request-ids"), SPAWNER_MAX_CONTAINERS="2") as up:
        yield up


@pytest.fixture(scope="module")
def user(stack: Stack) -> Iterator[User]:
    with httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT) as client:
        yield register(client, f"rid-{uuid.uuid4().hex[:8]}", "rid-password-1")


@pytest.fixture(scope="module")
def function(user: User) -> str:
    name = f"rid-{uuid.uuid4().hex[:8]}"
    user.create_function(name, busybox_image())
    return name


def log_lines(stack: Stack) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.log().splitlines() if line.startswith("{")]


def spawner_lines(stack: Stack, execution_id: str) -> list[dict[str, Any]]:
    """What the stack's spawner logged about one execution."""
    return [
        line
        for line in log_lines(stack)
        if line.get("execution_id") == execution_id and line["logger"].startswith("spawner.")
    ]


def test_the_request_id_reaches_the_record_and_the_spawners_logs(
    stack: Stack, user: User, function: str
) -> None:
    call = {"name": function, "argument": "echo hi"}
    answer = user.post("/publisher/publish", json=call, headers={"X-Request-ID": "abc-123"})

    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "abc-123"
    execution_id = answer.json()["execution_id"]
    assert answer.json()["request_id"] == "abc-123"
    record = user.get(f"/publisher/executions/{execution_id}")
    assert record.json()["request_id"] == "abc-123"

    def finished_logged() -> bool:
        return any(line["msg"] == "finished" for line in spawner_lines(stack, execution_id))

    assert wait_until(finished_logged, timeout=10), stack.tail()
    lines = spawner_lines(stack, execution_id)
    assert {"running", "finished"} <= {line["msg"] for line in lines}
    assert [line.get("request_id") for line in lines] == ["abc-123"] * len(lines)


def test_a_call_without_a_request_id_gets_one_kept_in_its_record(user: User, function: str) -> None:
    call = {"name": function, "argument": "echo later", "async": True}
    accepted = user.post("/publisher/publish", json=call)

    assert accepted.status_code == 202, accepted.text
    made_up = accepted.headers["x-request-id"]
    assert made_up
    status_url = accepted.json()["status_url"]
    final = user.get(status_url, params={"wait": 30}).json()
    assert final["status"] == "succeeded", final
    assert final["request_id"] == made_up


def test_a_failed_function_answers_with_the_request_id(user: User, function: str) -> None:
    call = {"name": function, "argument": "exit 3"}
    answer = user.post("/publisher/publish", json=call, headers={"X-Request-ID": "gw:fail.1"})

    assert answer.status_code == 502, answer.text
    assert answer.json()["code"] == "function_failed"
    assert answer.headers["x-request-id"] == "gw:fail.1"
    assert answer.json()["execution"]["request_id"] == "gw:fail.1"


def test_log_format_text_makes_readable_lines(tmp_path_factory: pytest.TempPathFactory) -> None:
    with (
        running_stack(tmp_path_factory.mktemp("text-logs"), LOG_FORMAT="text") as text_stack,
        httpx.Client(base_url=text_stack.url, timeout=HTTP_TIMEOUT) as client,
    ):
        answer = client.get("/auth/health", headers={"X-Request-ID": "text-1"})
        assert answer.status_code == 200

        def access_lines() -> list[str]:
            return [
                line
                for line in text_stack.log().splitlines()
                if " faas.access " in line and "request_id=text-1" in line
            ]

        assert wait_until(lambda: bool(access_lines()), timeout=10), text_stack.tail()
    [line] = access_lines()
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3} INFO  faas\.access  GET /auth/health 200  ", line)
    assert not any(out.startswith("{") for out in text_stack.log().splitlines())
