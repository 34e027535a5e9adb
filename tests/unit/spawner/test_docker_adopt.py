"""``DockerRuntime.adopt`` against a scripted Docker client: which container it takes, and how
engine failures and deadlines end an adoption (always ``started``, the container always removed)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from docker.errors import NotFound

from faas_common.contract import MANAGED_LABEL
from spawner_service.runtime.docker import DEADLINE_LABEL, EXECUTION_LABEL, MANAGED_VALUE
from tests.unit.spawner.scripted_docker import LOST, RuntimeOver, spec


def listed(container_id: str, state: str, *, deadline: float, created: int = 1) -> dict[str, Any]:
    labels = {
        MANAGED_LABEL: MANAGED_VALUE,
        EXECUTION_LABEL: "e-1",
        DEADLINE_LABEL: str(int(deadline)),
    }
    return {"Id": container_id, "State": state, "Labels": labels, "Created": created}


@dataclass
class ScriptedApi:
    listing: list[dict[str, Any]]
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    exits_after: float = 0.0
    """Seconds after ``wait`` is called at which the container exits (unless killed first)."""
    fail: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    filters: list[Any] = field(default_factory=list)
    _killed: threading.Event = field(default_factory=threading.Event)

    def _call(self, name: str, container_id: str = "") -> None:
        self.calls.append((name, container_id))
        if name in self.fail:
            raise self.fail[name]

    def containers(self, all: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self.filters.append(filters)
        self._call("containers")
        return self.listing

    def wait(self, container_id: str, timeout: float) -> dict[str, Any]:
        self._call("wait", container_id)
        self._killed.wait(self.exits_after)
        return {"StatusCode": 137 if self._killed.is_set() else self.exit_code}

    def kill(self, container_id: str) -> None:
        self._call("kill", container_id)
        self._killed.set()

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self._call("inspect_container", container_id)
        code = 137 if self._killed.is_set() else self.exit_code
        return {"State": {"ExitCode": code, "OOMKilled": False, "FinishedAt": ""}}

    def logs(self, container_id: str, stdout: bool, stderr: bool) -> bytes:
        self._call("logs", container_id)
        return self.stdout if stdout else self.stderr

    def remove_container(self, container_id: str, force: bool, v: bool) -> None:
        assert force  # forced,
        assert v  # with its anonymous volumes
        self.calls.append(("remove_container", container_id))


async def test_the_newest_container_of_the_execution_is_adopted(
    runtime_over: RuntimeOver,
) -> None:
    later = time.time() + 30
    api = ScriptedApi(
        listing=[
            listed("old", "exited", deadline=later, created=1),
            listed("new", "running", deadline=later, created=2),
        ],
        exit_code=0,
        stdout=b"out\n",
        stderr=b"err\n",
    )
    result = await runtime_over(api).adopt(spec())
    assert result is not None
    assert (result.outcome, result.stdout, result.stderr_tail) == ("succeeded", b"out\n", b"err\n")
    assert result.started is True
    assert {"run", "remove"} <= set(result.timings)
    # Every managed container: a taken prewarmed one is known by its name, not by a label.
    assert api.filters == [{"label": f"{MANAGED_LABEL}={MANAGED_VALUE}"}]
    assert ("wait", "new") in api.calls
    assert api.calls[-1] == ("remove_container", "new")


async def test_a_container_that_never_started_is_removed_not_adopted(
    runtime_over: RuntimeOver,
) -> None:
    api = ScriptedApi(listing=[listed("c1", "created", deadline=time.time() + 30)])
    assert await runtime_over(api).adopt(spec()) is None
    assert api.calls[-1] == ("remove_container", "c1")
    assert ("wait", "c1") not in api.calls


async def test_a_running_container_is_killed_at_its_deadline(
    runtime_over: RuntimeOver,
) -> None:
    api = ScriptedApi(
        listing=[listed("c1", "running", deadline=time.time() + 1)],
        exits_after=30.0,
        stderr=b"working\n",
    )
    started = time.monotonic()
    result = await runtime_over(api).adopt(spec())
    assert time.monotonic() - started < 4
    assert result is not None
    assert result.outcome == "timed_out"
    assert result.stderr_tail == b"working\n"
    assert result.started is True
    assert ("kill", "c1") in api.calls
    assert api.calls[-1] == ("remove_container", "c1")


@pytest.mark.parametrize(
    ("failing", "error", "detail"),
    [
        ("wait", LOST, "engine failed"),
        ("logs", LOST, "engine failed"),
        ("logs", NotFound("no such container"), "disappeared"),
    ],
    ids=["wait-lost", "logs-lost", "logs-gone"],
)
async def test_an_engine_failure_while_adopting_ends_the_activation(
    runtime_over: RuntimeOver,
    failing: str,
    error: BaseException,
    detail: str,
) -> None:
    api = ScriptedApi(
        listing=[listed("c1", "running", deadline=time.time() + 30)], fail={failing: error}
    )
    result = await runtime_over(api).adopt(spec())
    assert result is not None
    assert result.outcome == "runtime_unavailable"
    assert result.started is True  # the function ran, or may have: never run again
    assert result.detail is not None
    assert detail in result.detail
    assert api.calls[-1] == ("remove_container", "c1")


async def test_an_engine_failure_while_looking_is_runtime_unavailable(
    runtime_over: RuntimeOver,
) -> None:
    api = ScriptedApi(listing=[], fail={"containers": LOST})
    result = await runtime_over(api).adopt(spec())
    assert result is not None
    assert (result.outcome, result.started) == ("runtime_unavailable", True)
