"""End to end: ``./bin/run.sh`` started as a user starts it, driven by the README's curl lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.readme import Step, walkthrough
from tests.e2e.stack import (
    ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Stack,
    descendants,
    free_port,
    listening,
    running_stack,
)
from tests.support.images import python_base_image

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


def everything_printed(stack: Stack) -> str:
    if stack.reader is not None:
        stack.reader.join(5)  # the process is gone: read to the end of its output
    return stack.log()


def run_readme_steps(
    stack: Stack, steps: list[Step], *, cwd: Path, env: dict[str, str] | None = None
) -> list[tuple[Step, str]]:
    """Run README steps in one shell, as a user pasting them would, against ``stack``.

    Returns each step with what it printed; a step's expected status (its ``# → NNN`` comment)
    is checked here, and so is that every answer other than a 204 is JSON.
    """
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's lines")
    script_lines = ["set -u"]
    for index, step in enumerate(steps):
        # Markers split the output; printf first ends a body that had no final newline.
        script_lines.append(f"printf '\\n@@step {index}\\n'")
        script_lines.append(step.command.replace("localhost:8080", f"127.0.0.1:{stack.port}"))
    result = subprocess.run(
        ["bash", "-c", "\n".join(script_lines)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    chunks = re.split(r"^@@step (\d+)\n", result.stdout, flags=re.M)[1:]
    outputs = {int(chunks[i]): chunks[i + 1] for i in range(0, len(chunks), 2)}
    assert len(outputs) == len(steps)
    printed: list[tuple[Step, str]] = []
    for index, step in enumerate(steps):
        output = outputs[index].strip()
        if step.expected_status is not None:
            status_line = output.splitlines()[0] if output else ""
            status = re.match(r"HTTP/[\d.]+ (\d{3})", status_line)
            assert status is not None, f"{step.command}\n-> {output!r}\n{result.stderr}"
            assert int(status[1]) == step.expected_status, f"{step.command}\n-> {output}"
            output = re.split(r"\r?\n\r?\n", output, maxsplit=1)[-1].strip()
            if step.expected_status != 204:
                assert output.startswith(("{", "[")), output
        printed.append((step, output))
    return printed


def test_readme_walkthrough_runs_verbatim(stack: Stack, tmp_path: Path) -> None:
    steps = walkthrough()
    assert any(step.expected_status == 201 for step in steps)
    printed = run_readme_steps(stack, steps, cwd=tmp_path)
    bodies = {step.command: body for step, body in printed if step.expected_status is not None}
    # What the user reads in those answers, not only their status codes.
    login = next(body for command, body in bodies.items() if "/auth/login" in command)
    assert json.loads(login)["token_type"] == "bearer"
    assert json.loads(login)["access_token"].count(".") == 2
    listing = next(
        body
        for command, body in bodies.items()
        if command.endswith('/registry/functions -H "Authorization: Bearer $TOKEN"')
        and " -d " not in command
    )
    assert [function["name"] for function in json.loads(listing)] == ["hello"]
    created = next(body for command, body in bodies.items() if '"image": ' in command)
    assert json.loads(created)["image"] == "hello-python:latest"


def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    with running_stack(tmp_path, DOCKER_HOST="unix:///nonexistent/docker.sock") as stack:
        assert "warning: no Docker engine at /nonexistent/docker.sock" in stack.log()
        sigterm_stops_every_process(stack)


def sigterm_stops_every_process(stack: Stack) -> None:
    children = descendants(stack.process.pid)
    assert children, "the stack runs nats-server as a child"
    assert listening(stack.nats_port)
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(STOP_TIMEOUT) == 0
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.1)
    assert not [pid for pid in children if alive(pid)], everything_printed(stack)
    assert not listening(stack.port)
    assert not listening(stack.nats_port)


def test_sigint_stops_like_ctrl_c(stack: Stack) -> None:
    children = descendants(stack.process.pid)
    # Ctrl-C in a terminal signals the whole foreground process group.
    os.killpg(stack.process.pid, signal.SIGINT)
    assert stack.process.wait(STOP_TIMEOUT) == 0
    time.sleep(0.5)
    assert not [pid for pid in children if alive(pid)], everything_printed(stack)
    assert not listening(stack.nats_port)


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = subprocess.run(
            [str(ROOT / "bin" / "run.sh")],
            cwd=ROOT,
            env={
                **os.environ,
                "FAAS_PORT": str(busy),
                "FAAS_NATS_PORT": str(free_port()),
                "FAAS_DATA_DIR": str(tmp_path / "data"),
            },
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {busy}" in result.stderr
    assert "already in use" in result.stderr
    assert "FAAS_PORT" in result.stderr


def body_of(printed: list[tuple[Step, str]], fragment: str, nth: int = 0) -> dict[str, Any]:
    """The JSON answer of the ``nth`` README command containing ``fragment``."""
    bodies = [body for step, body in printed if fragment in step.command]
    answer = json.loads(re.split(r"\r?\n\r?\n", bodies[nth], maxsplit=1)[-1])
    assert isinstance(answer, dict)
    return answer


@pytest.mark.docker
def test_readme_function_says_hello_world(stack: Stack, tmp_path: Path) -> None:
    """The README from the top: register, log in, build the example function, call it."""
    python_base_image()  # the Dockerfile's FROM python:3.11-slim, made locally (no registry)
    steps = walkthrough() + walkthrough("activation")
    printed = run_readme_steps(stack, steps, cwd=tmp_path, env={"DOCKER_BUILDKIT": "0"})
    assert (tmp_path / "hello-python" / "Dockerfile").exists()

    sync = body_of(printed, '"argument": "hello world"')
    assert sync["status"] == "succeeded"
    assert sync["result"] == "HELLO WORLD"
    assert sync["exit_code"] == 0

    queued = body_of(printed, '"argument": "hello again"')
    assert queued["status_url"] == f"/publisher/executions/{queued['execution_id']}"

    first = body_of(printed, "Idempotency-Key: order-42", 0)
    again = body_of(printed, "Idempotency-Key: order-42", 1)
    assert first["result"] == "ONCE"
    assert again["execution_id"] == first["execution_id"]

    history = body_of(printed, "executions?function=hello")
    assert {record["function"] for record in history["executions"]} == {"hello"}

    # The polled call finishes on its own; its record then holds the result.
    token = body_of(printed, "/auth/login")["access_token"]
    execution = body_of(printed, "/publisher/executions/$EXECUTION")["execution_id"]
    deadline = time.monotonic() + 60
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = httpx.get(
            f"{stack.url}/publisher/executions/{execution}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        record = answer.json()
        if record["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    assert record["status"] == "succeeded"
    assert record["result"] == "POLLED"
