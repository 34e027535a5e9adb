"""A small stand-in for spawner-service, over the real stream and buckets.

It plays the consumer side of the contract: pulls ``Job`` messages from ``EXECUTIONS`` through the
durable consumer ``spawners``, moves the record queued → running by compare-and-set (a job whose
record moved on, or whose start deadline passed, is ``term``-ed), writes the final record, sends
it on the job's reply subject and only then acks. No container is run: ``outcome`` makes up the
result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    EXECUTIONS_STREAM,
    SPAWNER_CONSUMER,
    ExecutionRecord,
    Job,
    reply_subject,
)
from faas_common.executions import ExecutionStore, finished, started, transition

Outcome = Callable[[Job], dict[str, Any]]

TIMINGS = {"queue": 2.0, "pull": 0.5, "create": 10.0, "start": 200.0, "run": 5.0, "remove": 8.0}


def echo(job: Job) -> dict[str, Any]:
    return {"status": "succeeded", "result": job.argument, "exit_code": 0, "timings": TIMINGS}


@dataclass
class FakeSpawner:
    nc: NATS
    js: JetStreamContext
    store: ExecutionStore
    outcome: Outcome = echo
    decoy_instances: tuple[str, ...] = ()
    """Publisher instances that get a wrong result for every job of another instance first
    (they must not take it)."""
    finished: list[Job] = field(default_factory=list)
    terminated: list[Job] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _subscription: JetStreamContext.PullSubscription | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> FakeSpawner:
        self._subscription = await self.js.pull_subscribe(
            f"{EXEC_SUBJECT_PREFIX}.>", durable=SPAWNER_CONSUMER, stream=EXECUTIONS_STREAM
        )
        self._task = asyncio.create_task(self._run(self._subscription))
        return self

    async def __aexit__(self, *_: object) -> None:
        # Stop between two fetches rather than cancel: a cancelled fetch can swallow the
        # cancellation (it surfaces as a fetch timeout) and the loop would go on.
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._subscription is not None:
            await self._subscription.unsubscribe()

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                messages = await subscription.fetch(1, timeout=0.2)
            except nats.errors.TimeoutError:
                continue
            for message in messages:
                await self._handle(message)

    async def _handle(self, message: Msg) -> None:
        job = Job.model_validate_json(message.data)
        now = time.time()
        marked = None
        if now <= job.start_deadline:
            marked = await transition(self.store, job.user_id, job.execution_id, started(job, now))
        if marked is None:
            self.terminated.append(job)
            await message.term()
            return
        running = marked[0]
        for instance in self.decoy_instances:
            if job.reply_subject == reply_subject(instance, job.execution_id):
                continue
            decoy = running.model_copy(update={"status": "succeeded", "result": "decoy"})
            await self.nc.publish(
                reply_subject(instance, job.execution_id), decoy.model_dump_json().encode()
            )
        if self.decoy_instances:
            await self.nc.flush()
            await asyncio.sleep(0.2)
        final = ExecutionRecord.model_validate(
            running.model_dump()
            | {"finished_at": time.time(), "duration_ms": 5.0}
            | self.outcome(job)
        )
        await transition(self.store, job.user_id, job.execution_id, finished(final), known=marked)
        if job.reply_subject is not None:
            await self.nc.publish(job.reply_subject, final.model_dump_json().encode())
        await message.ack()
        self.finished.append(job)
