"""A publisher killed mid-burst of keyed calls: retries on the other publisher finish the job.

Every call carries an ``Idempotency-Key``. A call that gets no answer (the connection refused or
cut by the crash) or a 503 is retried with the same body and key on the other publisher, a
bounded number of times. Whatever the killed publisher had done for a key (claimed it, written
the record, queued the job, or not yet), the retry must end with the call's own output from one
execution (one execution id per key, one container), and no record may stay ``queued`` or
``running``: the publisher that would have expired it is gone.
"""

from __future__ import annotations

import pytest

from tests.integration.faults.conftest import SETTINGS, FaultRun
from tests.integration.faults.platform import Burst, Retry, examine, make_calls

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
    outcome = examine(
        topology,
        api,
        calls,
        functions=[sleeper],
        since=fault.since,
        settle_seconds=SETTINGS.queue_timeout_seconds + FUNCTION_TIMEOUT + 15,
    )
    problems = fault.report(outcome)
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
