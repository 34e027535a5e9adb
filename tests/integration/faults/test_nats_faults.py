"""NATS faults under load: a stream leader, a KV bucket leader or the whole cluster killed.

What a client may see while JetStream elects a new leader (≈ 5 s for a stream, 4-7 s for a KV
bucket, measured in NOTES.md): the publisher retries queueing the job and writing its record
across the election, so at most ``ELECTION_5XX_BUDGET`` calls of a burst answer with a 5xx, and a
503 always says when to come back (``Retry-After``). Every execution still reaches a final
status with its own output, in one container.
"""

from __future__ import annotations

import functools
import time

import pytest

from tests.integration.faults.conftest import FaultRun
from tests.integration.faults.platform import Burst, Call, Outcome, make_calls
from tests.support.processes import wait_until
from tests.support.topology import REPLICATED_STREAMS

pytestmark = [pytest.mark.nats, pytest.mark.docker, pytest.mark.timeout(300)]

ROUNDS = 2
"""Leader kills per test (a new burst each): elections differ in length, two see more."""
BURST_CALLS = 32
WORKERS = 6
KILL_AFTER = 6
"""The leader is killed once this many calls of the burst have answered."""
ELECTION_5XX_BUDGET = 2
SETTLE_SECONDS = 60.0
CACHE_BOUND_SECONDS = 3.0
"""After the publisher is back on NATS (and the delete answered), a deleted function must
answer 404 within this many seconds."""
CACHE_POLLS = 40


def election_problems(outcome: Outcome) -> list[str]:
    """The client-facing contract during an election: only 200s, at most the budget of 5xx,
    each 503 with ``Retry-After``, no call left without an answer."""
    problems = []
    errors = outcome.server_errors
    if len(errors) > ELECTION_5XX_BUDGET:
        problems.append(
            f"{len(errors)} answers with a 5xx during the election (at most "
            f"{ELECTION_5XX_BUDGET}): " + "; ".join(f"{a.status} {a.code}" for a in errors[:10])
        )
    bare = [answer for answer in errors if answer.status == 503 and not answer.retry_after]
    if bare:
        problems.append(f"{len(bare)} 503s without Retry-After, e.g. {bare[0].describe()}")
    for answer in outcome.answers:
        if answer.status is None:
            problems.append(f"no answer: {answer.describe()}")
        elif answer.status < 500 and answer.status != 200:
            problems.append(f"unexpected answer: {answer.describe()}")
    return problems


def kill_leader_mid_burst(fault: FaultRun, stream: str) -> tuple[list[Call], str]:
    """``ROUNDS`` bursts of echo calls over both publishers; in each, the node leading
    ``stream`` is killed (SIGKILL) once ``KILL_AFTER`` calls have answered, and started again
    (same store) after the burst, until its streams are current. The calls and the function."""
    topology = fault.topology
    cluster = topology.cluster
    echo = fault.function("echo")
    label = stream.lower().replace("_", "-")
    calls: list[Call] = []
    for round_ in range(1, ROUNDS + 1):
        batch = make_calls(fault.api, echo, BURST_CALLS, label=f"{label}-{round_}")
        calls += batch
        burst = Burst(fault.api, batch, workers=WORKERS).start()
        try:
            assert burst.wait_finished(KILL_AFTER, timeout=120), "the burst did not get going"
            leader = cluster.stream_leader(stream)
            assert leader is not None, f"{stream} has no leader: {topology.stream_summary()}"
            node = cluster.node(leader)
            held = sorted(name for name, where in cluster.leaders().items() if where == leader)
            fault.note(
                f"round {round_}: SIGKILL {leader} (pid {node.pid}), leader of {stream}, after "
                f"{burst.finished}/{len(batch)} answers; it led {', '.join(held)}"
            )
            node.kill()
        finally:
            burst.finish(timeout=240)
        fault.note(f"round {round_}: burst over; {stream} led by {cluster.stream_leader(stream)}")
        node.start()
        assert wait_until(
            lambda: cluster.streams_healthy(REPLICATED_STREAMS), timeout=60, interval=0.3
        ), f"{node.name} did not catch up: {topology.stream_summary()}"
    return calls, echo


@pytest.mark.parametrize(
    "stream",
    [
        pytest.param("EXECUTIONS", id="jobs-stream"),
        # Records are written to the ``executions`` bucket (stream ``KV_executions``) on every
        # call: its leader's loss stalls those writes for a whole KV election, which the
        # publisher must ride out instead of failing the calls.
        pytest.param("KV_executions", id="records-bucket"),
    ],
)
def test_leader_killed_mid_burst(fault: FaultRun, stream: str) -> None:
    calls, echo = kill_leader_mid_burst(fault, stream)
    outcome, problems = fault.examine(calls, functions=[echo], settle_seconds=SETTLE_SECONDS)
    problems += election_problems(outcome)
    assert not problems, "\n".join(problems)


def test_a_deleted_function_answers_404_after_nats_restarts(fault: FaultRun) -> None:
    """The publishers' function cache must not outlive what it missed: with every NATS node
    killed and started again, a function deleted around the reconnection answers 404 within
    ``CACHE_BOUND_SECONDS`` on both publishers, and each publisher says it rebuilt its cache."""
    topology = fault.topology
    cluster = topology.cluster
    api = fault.api
    echo = fault.function("echo")
    calls: list[Call] = []
    for index, publisher in enumerate(api.publisher_names):
        call = Call(index, echo, f"cached-{index}-{fault.since:.0f}", publisher)
        api.perform(call)
        calls.append(call)
        assert call.final is not None
        assert call.final.status == 200, call.final.describe()
    # The function is in both publishers' memory now (the call resolved it there or from KV).
    marks = topology.marks()

    killed_at = time.time()
    for node in cluster.nodes:
        fault.note(f"SIGKILL {node.name} (pid {node.pid})")
        node.kill()
    for node in cluster.nodes:
        node.start()
    cluster.wait_for_meta_leader(timeout=60)
    fault.note(f"cluster restarted ({time.time() - killed_at:.1f} s after the kill)")

    statuses = api.delete_function(echo, seconds=60)
    deleted_at = time.monotonic()
    fault.note(f"DELETE {echo}: {statuses}")

    def reconnected(name: str) -> bool:
        publisher = topology.publishers[name]
        if "reconnected" in publisher.stderr_since(marks[name]):
            return True
        reply = f"faas.reply.{topology.publisher_instance(name)}.*"
        return bool(cluster.connected_to("publisher-service", reply))

    back: dict[str, float] = {}
    for name in api.publisher_names:
        if wait_until(functools.partial(reconnected, name), timeout=60, interval=0.2):
            back[name] = time.monotonic()
    assert sorted(back) == api.publisher_names, f"publishers back on NATS: {sorted(back)}"
    fault.note("both publishers reconnected")

    problems = []
    for name in api.publisher_names:
        deadline = max(back[name], deleted_at) + CACHE_BOUND_SECONDS
        answers = []
        for _ in range(CACHE_POLLS):  # bounded in count and in time
            call = Call(len(calls), echo, f"deleted-{name}-{len(calls)}", name)
            api.perform(call)
            calls.append(call)
            assert call.final is not None
            answers.append(call.final)
            if call.final.status == 404 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        final = answers[-1]
        fault.note(f"{name}: deleted function answered {[a.status for a in answers]}")
        if final.status != 404 or final.code != "function_not_found":
            problems.append(
                f"{name}: the deleted function still answered {final.describe()} "
                f"{CACHE_BOUND_SECONDS:.0f} s after the reconnection and the delete"
            )
        log = topology.publishers[name].stderr_since(marks[name])
        if "rebuil" not in log:
            problems.append(f"{name}: no log line about a function cache rebuild ('rebuil')")

    _, found = fault.examine(calls, functions=[], settle_seconds=SETTLE_SECONDS)
    problems = found + problems
    assert not problems, "\n".join(problems)
