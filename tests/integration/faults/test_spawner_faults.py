"""Spawner faults: one killed while its functions run, one whose Docker engine is down.

- Killed (SIGKILL) mid-run: its containers live on in the engine. JetStream redelivers the jobs
  after ``SPAWNER_ACK_WAIT_SECONDS`` (12 s here) to the other spawner, which must take over the
  live container (adopt it) rather than run the function a second time: the sync callers get
  their result, and each execution id has exactly one container ever created.
- Engine down (``DOCKER_HOST`` naming a socket nobody listens on): that spawner must not take
  jobs it cannot run while a healthy spawner has free slots, so no call fails with
  ``runtime_unavailable``, and every job is delivered once (the ``spawners`` consumer's delivery
  count grows by the number of jobs queued, no more: nothing was fetched and handed back).
"""

from __future__ import annotations

import pytest

from tests.integration.faults.conftest import SETTINGS, FaultRun
from tests.integration.faults.platform import Burst, make_calls
from tests.support.processes import wait_until

pytestmark = [pytest.mark.nats, pytest.mark.docker, pytest.mark.timeout(300)]

SLEEP_SECONDS = 10
"""Long enough that the containers still run when the jobs are redelivered (ack wait 6 s)."""
FUNCTION_TIMEOUT = 60
ENGINE_DOWN_CALLS = 24
ENGINE_DOWN_WORKERS = 3
"""Below the healthy spawner's ``SPAWNER_MAX_CONTAINERS`` (4): it always has a free slot."""


def test_the_other_spawner_takes_over_the_running_functions_of_a_killed_one(
    fault: FaultRun,
) -> None:
    topology = fault.topology
    api = fault.api
    sleeper = fault.function("sleep", sleep_seconds=SLEEP_SECONDS, timeout_seconds=FUNCTION_TIMEOUT)
    calls = make_calls(api, sleeper, SETTINGS.spawner_max_containers, label="adopt")
    burst = Burst(api, calls, workers=len(calls)).start()
    try:

        def running_by_spawner() -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            for container in topology.managed_containers():
                if container["state"] == "running":
                    found.setdefault(container["spawner"], []).append(container["execution_id"])
            return found

        assert wait_until(
            lambda: sum(map(len, running_by_spawner().values())) == len(calls),
            timeout=60,
            interval=0.2,
        ), f"the calls' containers did not all start: {running_by_spawner()}"
        running = running_by_spawner()
        busiest = max(running, key=lambda instance: len(running[instance]))
        name = next(n for n in topology.spawners if topology.spawner_instance(n) == busiest)
        victim = topology.spawners[name]
        fault.note(
            f"SIGKILL {name} (pid {victim.pid}) running {len(running[busiest])} containers: "
            f"{sorted(running[busiest])}"
        )
        victim.kill()
    finally:
        burst.finish(timeout=240)

    settle = SETTINGS.queue_timeout_seconds + FUNCTION_TIMEOUT + 15
    _, problems = fault.examine(calls, functions=[sleeper], settle_seconds=settle)
    for call in calls:
        final = call.final
        assert final is not None
        if final.status != 200:
            problems.append(f"call {call.argument!r}: {final.describe()} (expected its result)")
    assert not problems, "\n".join(problems)


def test_a_spawner_without_docker_engine_takes_no_jobs_from_a_healthy_one(
    fault: FaultRun,
) -> None:
    topology = fault.topology
    api = fault.api
    # One healthy spawner (spawner-1) and one whose engine never answers; spawner-2 stops for
    # the test (the fixture starts it again afterwards).
    topology.spawners["spawner-2"].stop()
    missing_socket = topology.directory / "no-docker-engine.sock"
    broken = topology.add_spawner("spawner-no-engine", DOCKER_HOST=f"unix://{missing_socket}")
    try:
        broken.start()
        instance = topology.spawner_instance("spawner-no-engine")
        assert wait_until(
            lambda: (
                '"msg": "consuming"' in broken.stderr_since_start()
                or bool(topology.cluster.connected_to(f"spawner-service:{instance}"))
            ),
            timeout=60,
        ), f"the spawner without an engine did not come up:\n{broken.log_tail()}"
        fault.note(f"spawner-2 stopped; spawner-no-engine (pid {broken.pid}) on {missing_socket}")

        echo = fault.function("echo")
        calls = make_calls(api, echo, ENGINE_DOWN_CALLS, label="no-engine")
        before = topology.cluster.deliveries("EXECUTIONS", "spawners")
        Burst(api, calls, workers=ENGINE_DOWN_WORKERS).start().finish(timeout=240)
        outcome, problems = fault.examine(
            calls, functions=[echo], settle_seconds=SETTINGS.queue_timeout_seconds + 30
        )
        after = topology.cluster.deliveries("EXECUTIONS", "spawners")
    finally:
        topology.remove_spawner("spawner-no-engine")
    unavailable = [
        call
        for call in calls
        if call.final is not None
        and "runtime_unavailable" in {call.final.code, call.final.record_error}
    ]
    if unavailable:
        problems.append(
            f"{len(unavailable)} of {len(calls)} calls failed with runtime_unavailable "
            "while a healthy spawner had free slots: "
            + "; ".join(call.final.describe() for call in unavailable if call.final)
        )
    for execution_id, record in sorted(outcome.records.items()):
        if record.get("error") == "runtime_unavailable":
            problems.append(f"{execution_id}: record failed with runtime_unavailable")
    for call in calls:
        if call.final is not None and call.final.status != 200:
            problems.append(f"call {call.argument!r}: {call.final.describe()}")
    # Every job delivered once: none went to the spawner that cannot run it and back.
    assert before is not None, "no node reports the spawners consumer"
    assert after is not None, "no node reports the spawners consumer"
    jobs, deliveries = after[0] - before[0], after[1] - before[1]
    fault.note(f"{jobs} jobs queued, {deliveries} deliveries by the spawners consumer")
    if deliveries > jobs:
        problems.append(
            f"{deliveries - jobs} redeliveries for {jobs} jobs: the spawner without a Docker "
            "engine fetched jobs it could not run and handed them back"
        )
    assert not problems, "\n".join(problems)
