"""``DockerRuntime.run`` against a scripted Docker client: how engine failures before and after
the container's start end, and the exit status arriving right at the timeout."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from docker.errors import APIError

from tests.unit.spawner.scripted_docker import LOST, RuntimeOver, spec

STDOUT = 1


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


class AttachSocket:
    """What ``attach_socket`` returns: readable, closable; the test writes the other end."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, size: int) -> bytes:
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()


@dataclass
class ScriptedApi:
    """The low-level client: each call recorded; failures and timings scripted."""

    output: bytes = b""
    exit_after: float = 0.0
    """Seconds after the start at which the container's output stream ends."""
    wait_takes: float = 0.0
    """Seconds ``wait`` takes to answer once called."""
    fail: dict[str, BaseException] = field(default_factory=dict)
    """Method name -> the error it raises."""
    start_then_fail: bool = False
    """``start`` starts the container, then its answer is lost."""
    calls: list[str] = field(default_factory=list)
    _engine_end: socket.socket | None = None

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def inspect_image(self, image: str) -> dict[str, Any]:
        self._call("inspect_image")
        return {}

    def attach_socket(self, container_id: str, params: dict[str, Any]) -> AttachSocket:
        self._call("attach_socket")
        ours, self._engine_end = socket.socketpair()
        return AttachSocket(ours)

    def start(self, container_id: str) -> None:
        self.calls.append("start")
        engine_end = self._engine_end
        assert engine_end is not None

        def run_and_exit() -> None:
            engine_end.sendall(self.output)
            engine_end.close()

        threading.Timer(self.exit_after, run_and_exit).start()
        if self.start_then_fail:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        if "start" in self.fail:
            raise self.fail["start"]

    def wait(self, container_id: str, timeout: float) -> dict[str, Any]:
        self._call("wait")
        time.sleep(self.wait_takes)
        return {"StatusCode": 0}

    def kill(self, container_id: str) -> None:
        self.calls.append("kill")

    def remove_container(self, container_id: str, force: bool, v: bool = False) -> None:
        self.calls.append("remove_container")

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"State": {"ExitCode": 0, "OOMKilled": False}}


@pytest.mark.parametrize("failing", ["create", "attach_socket"])
async def test_an_engine_failure_before_the_start_may_be_retried(
    runtime_over: RuntimeOver, failing: str
) -> None:
    api = ScriptedApi(fail={failing: LOST})
    result = await runtime_over(api).run(spec())
    assert result.outcome == "runtime_unavailable"
    assert result.started is False
    assert "start" not in api.calls


async def test_a_start_whose_answer_is_lost_is_never_retried(
    runtime_over: RuntimeOver,
) -> None:
    api = ScriptedApi(start_then_fail=True, exit_after=0.05)
    result = await runtime_over(api).run(spec())
    assert result.outcome == "runtime_unavailable"
    assert result.started is True
    assert api.calls[-1] == "remove_container"


@pytest.mark.parametrize(
    "error",
    [LOST, requests.exceptions.ReadTimeout("read timed out")],
    ids=["connection-lost", "read-timeout"],
)
async def test_an_engine_failure_after_the_start_ends_the_activation(
    runtime_over: RuntimeOver, error: BaseException
) -> None:
    api = ScriptedApi(
        output=frame(STDOUT, b"did its work\n"), exit_after=0.05, fail={"wait": error}
    )
    result = await runtime_over(api).run(spec())
    assert result.outcome == "runtime_unavailable"
    assert result.started is True
    assert result.detail == "the Docker engine failed while the function ran"  # not the SDK's
    assert api.calls[-1] == "remove_container"


async def test_an_exit_right_at_the_timeout_is_not_a_timeout(
    runtime_over: RuntimeOver,
) -> None:
    # The output ends 0.1 s before the 2 s timeout; the exit status takes 0.3 s more to arrive.
    api = ScriptedApi(output=frame(STDOUT, b"just in time\n"), exit_after=1.9, wait_takes=0.3)
    result = await runtime_over(api).run(spec(timeout_seconds=2))
    assert result.outcome == "succeeded", result
    assert result.exit_code == 0
    assert result.stdout == b"just in time\n"
    assert "kill" not in api.calls


async def test_a_function_that_closes_its_output_and_keeps_running_still_times_out(
    runtime_over: RuntimeOver,
) -> None:
    api = ScriptedApi(exit_after=0.0, wait_takes=5.0)
    started = time.monotonic()
    result = await runtime_over(api).run(spec(timeout_seconds=1))
    assert result.outcome == "timed_out"
    assert 1.0 <= time.monotonic() - started < 4.5  # the timeout plus the grace, not the wait
    assert "kill" in api.calls


async def test_a_start_the_engine_refuses_reads_a_sentence_of_ours(
    runtime_over: RuntimeOver,
) -> None:
    refused = APIError('OCI runtime create failed: open /var/lib/docker/overlay2/x: "secret"')
    api = ScriptedApi(fail={"start": refused}, exit_after=0.05)
    result = await runtime_over(api).run(spec())
    assert result.outcome == "function_failed"
    assert result.detail == (
        "the container could not start (its entrypoint cannot be executed, or the engine "
        "refused it)"
    )
    assert api.calls[-1] == "remove_container"
