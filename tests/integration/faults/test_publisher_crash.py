"""A publisher killed mid-burst of keyed calls: retries on the other publisher finish the job.

Every call carries an ``Idempotency-Key``. A call that gets no answer (the connection refused or
cut by the crash) or a 503 is retried with the same body and key on the other publisher, a
bounded number of times. Whatever the killed publisher had done for a key (claimed it, written
the record, queued the job, or not yet), the retry must end with the call's own output from one
execution (one execution id per key, one container), and no record may stay ``queued`` or
``running``: the publisher that would have expired it is gone.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import jwt
import nats
import pytest

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
    ExecutionRecord,
    execution_key,
)
from faas_common.executions import new_execution_id
from publisher_service.service import IdempotencyClaim, fingerprint
from publisher_service.stores import idempotency_key
from tests.integration.faults.conftest import SETTINGS, FaultRun
from tests.integration.faults.platform import Api, Burst, Call, Retry, make_calls

pytestmark = [pytest.mark.nats, pytest.mark.docker, pytest.mark.timeout(300)]

CALLS = 40
WORKERS = 8
KILL_AFTER = 8
SLEEP_SECONDS = 1
"""Each call lasts a second or more, so several are in flight on the publisher killed."""
FUNCTION_TIMEOUT = 20


def test_keyed_calls_survive_a_publisher_crash(fault: FaultRun) -> None:
    topology = fault.topology
    api = fault.api
    sleeper = fault.function("sleep", sleep_seconds=SLEEP_SECONDS, timeout_seconds=FUNCTION_TIMEOUT)
    calls = make_calls(api, sleeper, CALLS, label="keyed", keyed=True)
    burst = Burst(api, calls, workers=WORKERS, retry=Retry()).start()
    victim = topology.publishers["publisher-1"]
    try:
        assert burst.wait_finished(KILL_AFTER, timeout=120), "the burst did not get going"
        fault.note(f"SIGKILL publisher-1 (pid {victim.pid}) after {burst.finished} answers")
        victim.kill()
    finally:
        burst.finish(timeout=240)
    retried = [call for call in calls if len(call.answers) > 1]
    fault.note(f"{len(retried)} calls retried on the other publisher")

    # Anything the killed publisher left queued must be final once its queue timeout (and a
    # started function's timeout, and the reply grace) is over.
    outcome, problems = fault.examine(
        calls,
        functions=[sleeper],
        settle_seconds=SETTINGS.queue_timeout_seconds + FUNCTION_TIMEOUT + 15,
    )
    for call in calls:
        final = call.final
        assert final is not None
        if final.status != 200:
            history = " -> ".join(answer.describe() for answer in call.answers)
            problems.append(f"key {call.key}: no correct answer in the end: {history}")
        if len(call.execution_ids) > 1:
            problems.append(
                f"key {call.key}: {len(call.execution_ids)} executions for one key "
                f"({sorted(call.execution_ids)})"
            )
    for execution_id, record in sorted(outcome.records.items()):
        if record.get("status") in {"queued", "running"}:
            problems.append(f"{execution_id}: still {record['status']} after the queue timeout")
    assert not problems, "\n".join(problems)


# --- The exact state a publisher killed between accepting and queueing leaves -----------------
#
# A SIGKILL mid-burst hits that window only now and then; these tests write, in the real cluster,
# what the killed publisher had written (the claimed Idempotency-Key, the ``queued`` record) and
# nothing more (no job), then let the live publisher processes deal with it.


def _user_id(api: Api) -> str:
    claims = jwt.decode(api.token, options={"verify_signature": False})
    return str(claims["sub"])


def _leave_orphan(
    fault: FaultRun, function: str, argument: str, *, key: str | None, start_in: float
) -> str:
    """Write a dead publisher's half-done activation; its execution id."""
    user_id = _user_id(fault.api)
    now = time.time()
    execution_id = new_execution_id()
    record = ExecutionRecord(
        execution_id=execution_id,
        function=function,
        status="queued",
        created_at=now,
        start_deadline=now + start_in,
    )
    claim = IdempotencyClaim(
        execution_id=execution_id,
        fingerprint=fingerprint(function, argument, False),
        start_deadline=now + start_in,
        enqueued_at=now,
    )

    async def write() -> None:
        nc = await nats.connect(servers=fault.topology.cluster.urls, connect_timeout=5)
        try:
            js = nc.jetstream(timeout=5)
            records = await js.key_value(EXECUTIONS_BUCKET)
            await records.create(
                execution_key(user_id, execution_id), record.model_dump_json().encode()
            )
            if key is not None:
                keys = await js.key_value(IDEMPOTENCY_BUCKET)
                await keys.create(idempotency_key(user_id, key), claim.model_dump_json().encode())
        finally:
            await nc.close()

    asyncio.run(write())
    return execution_id


def test_a_keyed_retry_runs_the_call_a_killed_publisher_never_queued(fault: FaultRun) -> None:
    echo = fault.function("echo")
    key = f"orphan-{uuid.uuid4().hex[:8]}"
    execution_id = _leave_orphan(fault, echo, "resumed", key=key, start_in=60.0)

    answer = fault.api.publish(
        "publisher-2",
        Call(index=0, function=echo, argument="resumed", key=key, publisher="publisher-2"),
    )

    assert answer.status == 200, answer.describe()
    assert answer.execution_id == execution_id
    assert isinstance(answer.body, dict)
    assert answer.body["result"] == "resumed"
    assert fault.topology.containers_created(fault.since)[execution_id] == 1


def test_an_orphaned_queued_record_is_final_after_its_start_deadline(fault: FaultRun) -> None:
    echo = fault.function("echo")
    execution_id = _leave_orphan(fault, echo, "never", key=None, start_in=1.0)
    time.sleep(1.5)  # past the start deadline the dead publisher gave it

    record = fault.api.record(execution_id)

    assert record is not None
    assert (record["status"], record["error"]) == ("timed_out", "timed_out")
    assert fault.topology.containers_created(fault.since)[execution_id] == 0
