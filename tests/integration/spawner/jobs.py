"""Helpers of the spawner's integration tests that drive a worker through NATS: settings, jobs
enqueued the way the publisher does, the replies a worker publishes, and stream checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from faas_common.contract import (
    EXECUTIONS_STREAM,
    ExecutionRecord,
    FunctionSnapshot,
    Job,
    ensure_executions_stream,
    exec_subject,
)
from faas_common.executions import ExecutionStore
from spawner_service.config import SpawnerSettings

NEVER_PULLED = "127.0.0.1:1/never-pulled:1"
"""For jobs that must not reach an engine: a loopback reference, so even a pull fails at once."""
USER = "user-1"


class Replies:
    """Every reply published under this test's reply prefix, by execution id."""

    def __init__(self) -> None:
        self.instance = f"test{uuid.uuid4().hex[:8]}"
        self.records: dict[str, ExecutionRecord] = {}
        self.arrived = asyncio.Condition()

    def subject(self, execution_id: str) -> str:
        return f"faas.reply.{self.instance}.{execution_id}"

    async def handle(self, msg: Msg) -> None:
        record = ExecutionRecord.model_validate_json(msg.data)
        async with self.arrived:
            self.records[record.execution_id] = record
            self.arrived.notify_all()

    async def wait(self, *execution_ids: str, within: float = 30.0) -> list[ExecutionRecord]:
        async with asyncio.timeout(within), self.arrived:
            await self.arrived.wait_for(lambda: all(i in self.records for i in execution_ids))
        return [self.records[i] for i in execution_ids]


def make_settings(**overrides: Any) -> SpawnerSettings:
    values: dict[str, Any] = {
        "max_containers": 2,
        "max_in_flight": 20,
        "max_in_flight_per_user": 20,
        "fetch_timeout": 0.5,
        "retry_delay_seconds": 0.2,
        "heartbeat_seconds": 1.0,
        "ack_wait_seconds": 10.0,
    }
    return SpawnerSettings(**(values | overrides))


def make_job(
    prefix: str,
    argument: str,
    *,
    image: str,
    timeout_seconds: int = 20,
    start_in: float = 30.0,
    user: str = USER,
    reply_to: Replies | None = None,
) -> Job:
    execution_id = f"{prefix}{uuid.uuid4().hex[:8]}"
    now = time.time()
    return Job(
        execution_id=execution_id,
        user_id=user,
        function=FunctionSnapshot(
            id="fn-1",
            owner_id=user,
            name="fn",
            image=image,
            timeout_seconds=timeout_seconds,
            memory_mb=64,
            env={},
            updated_at="2026-01-01T00:00:00Z",
        ),
        argument=argument,
        reply_subject=reply_to.subject(execution_id) if reply_to else None,
        enqueued_at=now,
        start_deadline=now + start_in,
        request_id=f"req-{execution_id}",
    )


async def enqueue(nc: NATS, store: ExecutionStore, job: Job, *, record: bool = True) -> None:
    """What the publisher does: a ``queued`` record, then the job into the stream."""
    if record:
        await store.create(
            job.user_id,
            ExecutionRecord(
                execution_id=job.execution_id,
                function=job.function.name,
                status="queued",
                created_at=job.enqueued_at,
            ),
        )
    await nc.jetstream().publish(
        exec_subject(job.user_id),
        job.model_dump_json().encode(),
        headers={"Nats-Msg-Id": job.execution_id},
    )


async def create_stream(nc: NATS, **overrides: Any) -> None:
    """The stream as the publisher would create it, before any worker runs."""
    await ensure_executions_stream(nc.jetstream(), make_settings(**overrides))


async def stream_messages(nc: NATS) -> int:
    info = await nc.jetstream().stream_info(EXECUTIONS_STREAM)
    return int(info.state.messages)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def stream_empty(nc: NATS) -> None:
    async def empty() -> bool:
        return await stream_messages(nc) == 0

    await eventually(empty)
