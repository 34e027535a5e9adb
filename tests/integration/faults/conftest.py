"""Fixtures of the fault-injection suite: one whole platform for the package, healed per test.

- ``topology`` (package): ``tests.support.topology`` — 3 NATS nodes, auth, registry, two
  publishers, two spawners, each its own OS process on loopback. Short queue timeouts (15 s),
  ``SPAWNER_ACK_WAIT_SECONDS=12`` and ``SPAWNER_HEARTBEAT_SECONDS=2``, so redeliveries and
  expiries happen within a test.
- ``api`` (package): one registered, logged-in user.
- ``fault`` (per test): heals the topology first (every node and service running and ready),
  remembers where each process's logs end and when the test started; afterwards removes the
  containers this topology's spawners left and heals again. A failed test's report gets every
  process's log lines written during the test; every test's summary line (answers, 5xx) is
  printed at the end of the session.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.faults.platform import Answer, Api, Call, Outcome, examine
from tests.support.infra import require_docker
from tests.support.processes import LogMark, wait_until
from tests.support.topology import (
    ECHO_IMAGE,
    SLEEP_ENV,
    SLEEP_IMAGE,
    Topology,
    TopologySettings,
    function_images,
    running_topology,
)

SETTINGS = TopologySettings()
FAULT_KEY = pytest.StashKey["FaultRun"]()
SUMMARY_KEY = pytest.StashKey[list[str]]()


@pytest.fixture(scope="package")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_docker()
    function_images()
    with running_topology(tmp_path_factory.mktemp("faults"), SETTINGS) as running:
        yield running


@pytest.fixture(scope="package")
def api(topology: Topology) -> Iterator[Api]:
    user = Api.login(topology, f"faults-{uuid.uuid4().hex[:6]}", "faults-password-1")
    try:
        yield user
    finally:
        user.close()


@dataclass
class FaultRun:
    """One test's view of the shared topology."""

    name: str
    topology: Topology = field(repr=False)
    api: Api = field(repr=False)
    since: float
    marks: dict[str, LogMark] = field(repr=False)
    notes: list[str] = field(default_factory=list, repr=False)

    def note(self, text: str) -> None:
        line = f"[{time.time() - self.since:6.1f} s] {text}"
        self.notes.append(line)
        print(line, flush=True)

    def function(self, kind: str, *, timeout_seconds: int = 30, **fields: Any) -> str:
        """Register a fresh function of this test: ``echo`` or ``sleep`` (``sleep_seconds``)."""
        name = f"{kind}-{uuid.uuid4().hex[:8]}"
        if kind == "echo":
            self.api.create_function(
                name, ECHO_IMAGE, timeout_seconds=timeout_seconds, memory_mb=32, **fields
            )
        elif kind == "sleep":
            seconds = fields.pop("sleep_seconds", 1)
            self.api.create_function(
                name,
                SLEEP_IMAGE,
                timeout_seconds=timeout_seconds,
                memory_mb=32,
                env={SLEEP_ENV: str(seconds)},
                **fields,
            )
        else:
            raise ValueError(kind)
        return name

    def examine(
        self, calls: Sequence[Call], *, functions: Iterable[str], settle_seconds: float
    ) -> tuple[Outcome, list[str]]:
        """Settle this test's calls and look at what they left: the outcome and its problems."""
        outcome = examine(
            self.topology,
            self.api,
            calls,
            functions=functions,
            since=self.since,
            settle_seconds=settle_seconds,
        )
        return outcome, self.report(outcome)

    def report(self, outcome: Outcome) -> list[str]:
        """Note the outcome's summary (the 5xx count among it); its problems."""
        self.note(f"outcome: {outcome.summary()}")
        kinds = Counter(
            (answer.status, answer.code, answer.retry_after, _detail(answer))
            for answer in outcome.server_errors
        )
        for (status, code, retry_after, detail), count in sorted(kinds.items(), key=str):
            self.note(f"5xx x{count}: {status} {code} retry-after={retry_after} {detail!r}")
        return outcome.problems()


@pytest.fixture
def fault(topology: Topology, api: Api, request: pytest.FixtureRequest) -> Iterator[FaultRun]:
    topology.heal()
    run = FaultRun(request.node.name, topology, api, time.time(), topology.marks())
    request.node.stash[FAULT_KEY] = run
    try:
        yield run
    finally:
        removed = topology.remove_containers()
        if removed:
            run.note(f"teardown removed {removed} leftover containers")
        topology.heal()
        # Jobs still in the stream (a redelivery in flight) would run during the next test.
        if not wait_until(lambda: _queued_jobs(topology) == 0, timeout=30.0, interval=0.5):
            run.note(f"teardown: {_queued_jobs(topology)} jobs still in EXECUTIONS")
        topology.remove_containers()


def _detail(answer: Answer) -> str:
    body = answer.body if isinstance(answer.body, dict) else {}
    return str(body.get("detail", ""))[:120]


def _queued_jobs(topology: Topology) -> int:
    detail = topology.cluster.streams().get("EXECUTIONS") or {}
    return int((detail.get("state") or {}).get("messages") or 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    run = item.stash.get(FAULT_KEY, None)
    if run is None:
        return report
    if report.failed:
        report.sections.append(
            (f"process logs during {run.name}", run.topology.logs_since(run.marks, 4000))
        )
    if report.when == "teardown":
        summary = item.config.stash.setdefault(SUMMARY_KEY, [])
        summary.append(f"{run.name}:")
        summary.extend(f"    {line}" for line in run.notes)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY_KEY, [])
    if lines:
        terminalreporter.section("fault injection: what each test did and saw (5xx counts)")
        for line in lines:
            terminalreporter.write_line(line)
