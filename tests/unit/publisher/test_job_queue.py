"""The JetStream adapter of the job queue: which publish failures are retried, which are a full
stream, which are the runtime being unavailable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import BadRequestError, NoStreamResponseError, ServiceUnavailableError

from faas_common.contract import Job
from faas_common.nats import RetryBudget
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.jobs import NatsJobQueue
from publisher_service.service import QueueFull
from tests.unit.publisher.factories import snapshot


@dataclass
class ScriptedJetStream:
    """Answers each publish with the next scripted failure, then with a PubAck."""

    failures: list[BaseException]
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> PubAck:
        self.calls.append({"subject": subject, "payload": payload, **kwargs})
        if self.failures:
            raise self.failures.pop(0)
        return PubAck(stream="EXECUTIONS", seq=41 + len(self.calls))


def queue_over(js: ScriptedJetStream, total: float = 5.0) -> NatsJobQueue:
    budget = RetryBudget(total=total, attempt=1.0, backoff=0.001)
    return NatsJobQueue(cast(NATS, None), cast(JetStreamContext, js), budget=budget)


def job(request_id: str | None = "req-1") -> Job:
    now = time.time()
    return Job(
        execution_id="e1",
        user_id="u1",
        function=snapshot("u1"),
        argument="x",
        enqueued_at=now,
        start_deadline=now + 30,
        request_id=request_id,
    )


@pytest.mark.parametrize(
    "failure",
    [
        nats.errors.TimeoutError(),
        NoStreamResponseError(),
        ServiceUnavailableError(code=503, description="JetStream not ready"),
    ],
    ids=["timeout", "no-responders", "unavailable"],
)
async def test_transient_failures_are_retried_with_the_same_msg_id(
    failure: BaseException,
) -> None:
    js = ScriptedJetStream([failure])
    queued = job()

    sequence = await queue_over(js).enqueue(queued)

    assert sequence == 43
    assert len(js.calls) == 2
    for call in js.calls:
        assert call["subject"] == "faas.exec.u1"
        assert call["stream"] == "EXECUTIONS"
        assert call["headers"] == {"Nats-Msg-Id": "e1", "X-Request-ID": "req-1"}
    assert Job.model_validate_json(js.calls[0]["payload"]) == queued


async def test_a_full_stream_is_queue_full_at_once() -> None:
    js = ScriptedJetStream(
        [ServiceUnavailableError(code=503, err_code=10077, description="maximum messages exceeded")]
    )

    with pytest.raises(QueueFull, match="maximum messages exceeded"):
        await queue_over(js).enqueue(job())

    assert len(js.calls) == 1


async def test_a_refusal_is_unavailable_at_once() -> None:
    js = ScriptedJetStream([BadRequestError(code=400, err_code=10060, description="wrong stream")])

    with pytest.raises(RuntimeUnavailable):
        await queue_over(js).enqueue(job())

    assert len(js.calls) == 1


async def test_giving_up_once_the_retry_budget_is_spent() -> None:
    js = ScriptedJetStream([nats.errors.TimeoutError() for _ in range(10_000)])

    with pytest.raises(RuntimeUnavailable, match="did not answer") as raised:
        await queue_over(js, total=0.2).enqueue(job(request_id=None))

    assert 2 <= len(js.calls) < 10_000
    assert isinstance(raised.value.__cause__, nats.errors.TimeoutError)
    assert js.calls[0]["headers"] == {"Nats-Msg-Id": "e1"}


async def test_a_closed_connection_is_unavailable_at_once() -> None:
    js = ScriptedJetStream([nats.errors.ConnectionClosedError()])

    with pytest.raises(RuntimeUnavailable):
        await queue_over(js).enqueue(job())

    assert len(js.calls) == 1
