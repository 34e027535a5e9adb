"""The worker's fetch loop with a scripted subscription: it never holds more jobs than free slots,
and a message it hands back is never left in the stream once its deliveries are used up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import nats.errors

from faas_common.contract import Job
from spawner_service.handler import JobHandler
from spawner_service.worker import Worker
from tests.unit.spawner.fakes import (
    FakeMsg,
    FakeRuntime,
    FakeStore,
    Replies,
    make_job,
    make_settings,
    queued_record,
)


class FakeConnection:
    max_payload = 1_048_576
    is_closed = False

    def jetstream(self) -> object:
        return object()


@dataclass
class ScriptedSubscription:
    """Hands over each batch once (whatever was asked for), then stops the worker."""

    worker: Worker
    batches: list[list[FakeMsg]]
    stop_while_fetching: bool = False
    """Stop the worker during the first fetch: what it brings arrives while stopping."""
    asked: list[int] = field(default_factory=list)

    # The signature of nats-py's PullSubscription.fetch.
    async def fetch(self, batch: int, timeout: float) -> list[FakeMsg]:  # noqa: ASYNC109
        self.asked.append(batch)
        if self.stop_while_fetching or not self.batches:
            self.worker.stop()
        if self.batches:
            return self.batches.pop(0)
        raise nats.errors.TimeoutError


async def consume(
    batches: list[list[FakeMsg]], store: FakeStore, *, stop_first: bool = False, **settings: Any
) -> Replies:
    values: dict[str, Any] = {"max_containers": 1, "max_deliver": 3} | settings
    config = make_settings(**values)
    runtime = FakeRuntime()
    runtime.store = store
    replies = Replies()
    worker = Worker(config, nc=cast(Any, FakeConnection()), runtime=runtime, store=store)
    subscription = ScriptedSubscription(worker, batches, stop_while_fetching=stop_first)
    worker._subscription = cast(Any, subscription)
    worker._handler = JobHandler(config, runtime=runtime, store=store, publish=replies)
    await worker._consume()
    assert subscription.asked[0] == config.max_containers
    await asyncio.gather(*worker._jobs)
    return replies


def status(store: FakeStore, job: Job) -> tuple[str, str | None]:
    record = store.current(job.user_id, job.execution_id)
    assert record is not None
    return record.status, record.error


def message(store: FakeStore, job: Job, delivered: int) -> FakeMsg:
    store.seed(job.user_id, queued_record(job))
    return FakeMsg(job.model_dump_json().encode(), delivered=delivered)


async def test_surplus_messages_are_nakked_or_terminated_on_their_last_delivery() -> None:
    store = FakeStore()
    kept, surplus, exhausted = make_job(), make_job(), make_job()
    msgs = [message(store, kept, 1), message(store, surplus, 2), message(store, exhausted, 3)]

    replies = await consume([msgs], store)

    assert msgs[0].actions == [("ack", None)]
    assert msgs[1].actions == [("nak", None)]
    assert msgs[2].actions == [("term", None)]
    assert status(store, kept) == ("succeeded", None)
    assert status(store, surplus) == ("queued", None)
    assert status(store, exhausted) == ("failed", "runtime_unavailable")
    replied = {record.execution_id for _, record in replies.sent}
    assert replied == {kept.execution_id, exhausted.execution_id}


async def test_messages_fetched_while_stopping_are_handed_back() -> None:
    store = FakeStore()
    early, exhausted = make_job(), make_job()
    msgs = [message(store, early, 1), message(store, exhausted, 2)]

    await consume([msgs], store, stop_first=True, max_containers=2, max_deliver=2)

    assert msgs[0].actions == [("nak", None)]
    assert msgs[1].actions == [("term", None)]
    assert status(store, early) == ("queued", None)
    assert status(store, exhausted) == ("failed", "runtime_unavailable")
