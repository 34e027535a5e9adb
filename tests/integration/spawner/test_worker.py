"""The worker against a real nats-server (and, where a function runs, the real Docker engine).

Jobs are published straight into the ``EXECUTIONS`` stream the way the publisher does (subject
``faas.exec.<user>``, ``Nats-Msg-Id`` = execution id), with records in a bucket of this test's
own. The stream's name is fixed by the contract: every test deletes it before and after itself
(the nats-server is shared by the whole session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import docker
import nats.errors
import nats.js.errors
import pytest
import requests
from nats.aio.client import Client as NATS

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    EXECUTIONS_STREAM,
    MANAGED_LABEL,
    SPAWNER_CONSUMER,
    STREAM_FULL,
    ExecutionRecord,
    Job,
    exec_subject,
    execution_key,
)
from faas_common.executions import ExecutionStore
from spawner_service.runtime.docker import MANAGED_VALUE, DockerRuntime
from spawner_service.runtime.prewarm import PooledRuntime
from spawner_service.worker import Worker
from tests.integration.spawner.conftest import (
    containers_of,
    containers_of_instance,
    engine_events,
    execution_of,
)
from tests.integration.spawner.jobs import (
    USER,
    Replies,
    create_stream,
    enqueue,
    eventually,
    make_job,
    make_settings,
    stream_empty,
    stream_messages,
)

MISS_PHASES = {"queue", "pull", "create", "start", "run"}
"""A miss's phases with the pool (a spawner's default): its container, started for the call, is
removed after it."""
StartWorker = Callable[..., Awaitable[tuple[Worker, "asyncio.Task[None]"]]]


@pytest.fixture
async def start_worker(
    request: pytest.FixtureRequest, nc: NATS, store: ExecutionStore, prefix: str
) -> AsyncIterator[StartWorker]:
    """Starts workers, with the prewarm pool as a spawner has it by default (on the session's
    shim; ``pool_max_parked=0``: without); stops them (held jobs finished) before ``prefix``
    checks for leftovers, then none of their containers may remain."""
    started: list[tuple[Worker, asyncio.Task[None], DockerRuntime]] = []

    async def start(
        *, docker_url: str | None = None, **overrides: Any
    ) -> tuple[Worker, asyncio.Task[None]]:
        values = {"instance_id": f"{prefix}worker{len(started)}"} | overrides
        settings = make_settings(**values)
        if settings.pool:
            shim = str(request.getfixturevalue("shim_binary"))
            settings = make_settings(**({"pool_shim": shim} | values))
        runtime_type = PooledRuntime if settings.pool else DockerRuntime
        runtime = runtime_type(settings, base_url=docker_url)
        worker = Worker(settings, nc=nc, runtime=runtime, store=store)
        await worker.setup()
        task = asyncio.create_task(worker.run())
        started.append((worker, task, runtime))
        return worker, task

    yield start
    for worker, task, runtime in started:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await runtime.close()
    if request.node.get_closest_marker("docker") is not None:
        client = docker.DockerClient()
        try:
            ids = [runtime.settings.instance_id for _, _, runtime in started]
            left = [c for i in ids for c in containers_of_instance(client, i)]
        finally:
            client.close()
        assert left == [], f"containers left after close: {[c['Names'] for c in left]}"


def most_at_once(records: list[ExecutionRecord]) -> int:
    """The largest number of activations whose handling (pick-up to final record) overlapped."""
    edges: list[tuple[float, int]] = []
    for record in records:
        assert record.finished_at is not None
        assert record.duration_ms is not None
        edges.append((record.finished_at - record.duration_ms / 1000, 1))
        edges.append((record.finished_at, -1))
    most = current = 0
    for _, change in sorted(edges):  # an end sorts before a start at the same instant
        current += change
        most = max(most, current)
    return most


def container_events(client: Any, execution_id: str, since: float) -> list[str]:
    """The engine's events of the containers that ran ``execution_id``: labelled with it (a
    cold run), or renamed for it (a container of the pool's, parked or started for the call)."""
    events = engine_events(client, f"{MANAGED_LABEL}={MANAGED_VALUE}", since)
    ran_it = set()
    for event in events:
        attributes = event["Actor"]["Attributes"]  # its labels, and its name then
        if execution_of({"Labels": attributes, "Names": [attributes["name"]]}) == execution_id:
            ran_it.add(event["Actor"]["ID"])
    return [event["Action"] for event in events if event["Actor"]["ID"] in ran_it]


async def watch_statuses(store: ExecutionStore, job: Job) -> tuple[list[str], asyncio.Task[None]]:
    statuses: list[str] = []
    watcher = await store.kv.watch(execution_key(job.user_id, job.execution_id))

    async def collect() -> None:
        async for entry in watcher:
            if entry is not None and entry.value:
                statuses.append(ExecutionRecord.model_validate_json(entry.value).status)

    return statuses, asyncio.create_task(collect())


async def is_running(store: ExecutionStore, job: Job) -> bool:
    current = await store.get(job.user_id, job.execution_id)
    return current is not None and current[0].status == "running"


async def stored_record(store: ExecutionStore, job: Job) -> ExecutionRecord:
    current = await store.get(job.user_id, job.execution_id)
    assert current is not None, f"no record of {job.execution_id}"
    return current[0]


@dataclass
class Spawning:
    """What most worker tests use together: the connection, the records, the replies, workers,
    this test's execution id prefix and the busybox image (``ENTRYPOINT sh -c``)."""

    nc: NATS
    store: ExecutionStore
    replies: Replies
    start_worker: StartWorker
    prefix: str
    busybox: str

    def job(self, script: str, **overrides: Any) -> Job:
        """A job running ``script`` on busybox, replied to ``replies``."""
        values: dict[str, Any] = {"image": self.busybox, "reply_to": self.replies} | overrides
        return make_job(self.prefix, script, **values)

    async def submit(self, script: str, **overrides: Any) -> Job:
        """``job``, recorded ``queued`` and published like the publisher does."""
        job = self.job(script, **overrides)
        await enqueue(self.nc, self.store, job)
        return job

    async def reply(self, job: Job, *, within: float = 30.0) -> ExecutionRecord:
        [reply] = await self.replies.wait(job.execution_id, within=within)
        return reply

    async def run(self, script: str) -> ExecutionRecord:
        """Submit ``script`` and wait for its reply."""
        return await self.reply(await self.submit(script))


@pytest.fixture
def spawning(
    nc: NATS,
    store: ExecutionStore,
    replies: Replies,
    start_worker: StartWorker,
    prefix: str,
    busybox: str,
) -> Spawning:
    return Spawning(nc, store, replies, start_worker, prefix, busybox)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.docker
async def test_a_job_runs_and_its_record_and_reply_follow(
    spawning: Spawning, docker_client: Any
) -> None:
    w = spawning
    since = time.time()
    await w.start_worker()
    job = w.job("echo hello; echo a-log-line >&2")
    await w.store.create(
        job.user_id,
        ExecutionRecord(
            execution_id=job.execution_id, function="fn", status="queued", created_at=since
        ),
    )
    statuses, watching = await watch_statuses(w.store, job)
    await enqueue(w.nc, w.store, job, record=False)

    reply = await w.reply(job)
    assert reply.status == "succeeded"
    assert reply.result == "hello"
    assert reply.logs == "a-log-line\n"
    assert reply.exit_code == 0
    assert reply.error is None
    assert set(reply.timings) == MISS_PHASES
    assert reply.created_at == since
    assert await stored_record(w.store, job) == reply
    await stream_empty(w.nc)  # acked

    async def all_seen() -> bool:
        return statuses == ["queued", "running", "succeeded"]

    await eventually(all_seen)
    watching.cancel()

    async def removed() -> bool:  # after the call: its container is removed once it is replied
        return not await asyncio.to_thread(containers_of, docker_client, job.execution_id)

    await eventually(removed)
    actions = await asyncio.to_thread(container_events, docker_client, job.execution_id, since)
    assert "create" in actions
    assert "destroy" in actions


@pytest.mark.docker
async def test_a_function_called_again_has_its_next_call_take_a_parked_container(
    spawning: Spawning,
) -> None:
    w = spawning
    worker, _ = await w.start_worker()
    runtime = worker.runtime
    assert isinstance(runtime, PooledRuntime)
    for argument in ("echo first", "echo again"):  # once is not enough to park for it
        earlier = await w.run(argument)
        assert set(earlier.timings) == MISS_PHASES

    async def parked() -> bool:
        return any(True for _ in runtime.prewarm.pool)

    await eventually(parked)
    second = await w.run("echo second")
    assert (second.status, second.result) == ("succeeded", "second")
    assert set(second.timings) == {"queue", "pool", "run"}


@pytest.mark.docker
async def test_a_failing_function_is_reported_as_failed(spawning: Spawning) -> None:
    await spawning.start_worker()
    reply = await spawning.run("echo half; echo broken >&2; exit 4")
    assert (reply.status, reply.error, reply.exit_code) == ("failed", "function_failed", 4)
    assert reply.logs == "broken\n"
    assert reply.detail == "exited with status 4"
    await stream_empty(spawning.nc)


@pytest.mark.docker
async def test_an_expired_job_is_terminated_and_never_run(
    spawning: Spawning, docker_client: Any
) -> None:
    w = spawning
    since = time.time()
    job = w.job("echo should-not-run", start_in=-1)
    await create_stream(w.nc)
    await enqueue(w.nc, w.store, job)
    await w.start_worker()
    reply = await w.reply(job)
    assert (reply.status, reply.error) == ("timed_out", "timed_out")
    assert reply.result is None
    assert (await stored_record(w.store, job)).status == "timed_out"
    await stream_empty(w.nc)  # terminated: it does not wait for redelivery
    actions = await asyncio.to_thread(container_events, docker_client, job.execution_id, since)
    assert actions == []


@pytest.mark.docker
async def test_a_poison_message_is_terminated_and_the_worker_goes_on(spawning: Spawning) -> None:
    w = spawning
    await w.start_worker()
    js = w.nc.jetstream()
    await js.publish(exec_subject(USER), b'{"this is": "not a job"}')
    await js.publish(exec_subject(USER), b"\xff\xfe binary")
    reply = await w.run("echo fine")
    assert reply.result == "fine"
    await stream_empty(w.nc)
    consumer = await js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
    assert consumer.num_ack_pending == 0
    assert consumer.num_redelivered == 0


@pytest.mark.docker
async def test_never_more_jobs_than_container_slots(spawning: Spawning, docker_client: Any) -> None:
    w = spawning
    jobs = [w.job(f"sleep 1; echo {n}") for n in range(5)]
    await create_stream(w.nc)
    for job in jobs:
        await enqueue(w.nc, w.store, job)
    await w.start_worker(max_containers=2)

    most_containers = 0
    waiting = asyncio.create_task(w.replies.wait(*(job.execution_id for job in jobs), within=60))
    while not waiting.done():
        containers = await asyncio.to_thread(containers_of, docker_client, w.prefix)
        # A pooled container stays from its function's end (its shim lingers) until it is
        # removed after the reply, and a job's slot is free once it is replied: a container
        # whose reply came before the listing ended runs no job. The replies are read after
        # the listing: the count can only come out low, and most_at_once below is exact.
        replied = set(w.replies.records)
        running = [
            c for c in containers if c["State"] != "exited" and execution_of(c) not in replied
        ]
        most_containers = max(most_containers, len(running))
        await asyncio.sleep(0.05)
    results = await waiting
    assert [r.result for r in results] == ["0", "1", "2", "3", "4"]
    assert 1 <= most_containers <= 2  # sampled: never a third container
    # Exact, from the records: how many activations were being handled at the same time.
    assert most_at_once(results) == 2
    await stream_empty(w.nc)


@pytest.mark.docker
async def test_a_graceful_stop_finishes_held_work(spawning: Spawning) -> None:
    w = spawning
    worker, running = await w.start_worker()
    held = await w.submit("sleep 2; echo done")
    await eventually(lambda: is_running(w.store, held))
    worker.stop()
    late = await w.submit("echo too-late")
    await asyncio.wait_for(running, 30)

    # The held job was finished, stored and acked before the worker returned.
    stored = await stored_record(w.store, held)
    assert (stored.status, stored.result) == ("succeeded", "done")
    assert await w.reply(held, within=5) == stored
    assert late.execution_id not in w.replies.records
    assert (await stored_record(w.store, late)).status == "queued"
    assert await stream_messages(w.nc) == 1  # the late job waits for another spawner


@pytest.mark.docker
async def test_the_worker_sets_a_deleted_stream_up_again(spawning: Spawning) -> None:
    w = spawning
    await w.start_worker()
    js = w.nc.jetstream()
    await js.delete_stream(EXECUTIONS_STREAM)

    async def consumer_back() -> bool:
        try:
            await js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
        except nats.js.errors.NotFoundError:
            return False
        return True

    await eventually(consumer_back)
    reply = await w.run("echo back")
    assert reply.result == "back"


async def test_the_stream_limits_refuse_a_publish_when_full(
    nc: NATS, store: ExecutionStore
) -> None:
    settings = make_settings(max_in_flight=3, max_in_flight_per_user=2)
    runtime = DockerRuntime(settings)
    try:
        for _ in range(2):  # idempotent, as every replica runs it at start-up
            await Worker(settings, nc=nc, runtime=runtime, store=store).setup()
    finally:
        await runtime.close()
    js = nc.jetstream()
    consumer = await js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
    assert consumer.config.ack_wait == 10.0
    # 3 failed deliveries, plus room for the fair-share hand-backs (900 s at 1 s), none here.
    assert consumer.config.max_deliver == 3 + 901
    assert consumer.config.filter_subject == "faas.exec.>"
    stream = await js.stream_info(EXECUTIONS_STREAM)
    assert stream.config.max_age == 3600.0

    await js.publish(exec_subject("alice"), b"1")
    await js.publish(exec_subject("alice"), b"2")
    with pytest.raises(nats.js.errors.APIError) as per_user:
        await js.publish(exec_subject("alice"), b"3")
    assert per_user.value.err_code == STREAM_FULL
    await js.publish(exec_subject("bob"), b"4")
    with pytest.raises(nats.js.errors.APIError) as total:
        await js.publish(exec_subject("carol"), b"5")
    assert total.value.err_code == STREAM_FULL


@pytest.mark.docker
async def test_a_spawner_without_an_engine_fetches_nothing_and_a_healthy_one_runs_the_job(
    spawning: Spawning,
) -> None:
    w = spawning
    blind, _ = await w.start_worker(docker_url="tcp://127.0.0.1:1", engine_check_seconds=0.2)
    job = await w.submit("echo ran")
    for _ in range(30):  # bounded: 3 s of fetch loop without an engine
        await asyncio.sleep(0.1)
    consumer = await w.nc.jetstream().consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
    assert consumer.delivered.consumer_seq == 0  # never taken: its deliveries are intact
    assert not blind.ready

    await w.start_worker()
    reply = await w.reply(job)

    assert (reply.status, reply.result) == ("succeeded", "ran")
    await stream_empty(w.nc)


@pytest.mark.docker
async def test_the_process_finishes_held_work_and_exits_0_on_sigterm(
    nc: NATS, replies: Replies, prefix: str, nats_url: str, busybox: str
) -> None:
    js = nc.jetstream()
    bucket_existed = True
    try:
        await js.key_value(EXECUTIONS_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        bucket_existed = False
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "NATS_CONNECT_TIMEOUT": "10",
        "MAX_IN_FLIGHT": "20",
        "MAX_IN_FLIGHT_PER_USER": "20",
        "SPAWNER_FETCH_TIMEOUT": "0.5",
        "SPAWNER_INSTANCE_ID": f"{prefix}spawner",
        "LOG_LEVEL": "INFO",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spawner_service",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    logs = asyncio.create_task(process.stderr.read())
    job = make_job(prefix, "sleep 2; echo bye", image=busybox, reply_to=replies)
    try:

        async def consuming() -> bool:
            try:
                await js.consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
                await js.key_value(EXECUTIONS_BUCKET)
            except nats.js.errors.NotFoundError:
                return False
            return True

        await eventually(consuming, within=20)
        store = ExecutionStore(await js.key_value(EXECUTIONS_BUCKET))
        await enqueue(nc, store, job)

        await eventually(lambda: is_running(store, job), within=20)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        [reply] = await replies.wait(job.execution_id, within=5)
        assert (reply.status, reply.result) == ("succeeded", "bye")
        assert await stream_messages(nc) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        output = (await logs).decode()
        if bucket_existed:
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                await (await js.key_value(EXECUTIONS_BUCKET)).purge(
                    execution_key(job.user_id, job.execution_id)
                )
        else:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_key_value(EXECUTIONS_BUCKET)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    about_job = [line for line in lines if line.get("execution_id") == job.execution_id]
    assert {line["msg"] for line in about_job} >= {"running", "finished"}
    [finished] = [line for line in about_job if line["msg"] == "finished"]
    assert finished["status"] == "succeeded"
    assert set(finished["timings"]) == MISS_PHASES
    assert all(line.get("request_id") == job.request_id for line in about_job)
    assert any(line["msg"] == "stopped" for line in lines)


@pytest.mark.docker
@pytest.mark.parametrize(
    "script",
    ["head -c 200000 /dev/zero | tr '\\0' '\\001'", "head -c 1048576 /dev/zero | tr '\\0' a"],
    ids=["control-characters", "one-mebibyte-of-text"],
)
async def test_a_result_too_large_for_a_nats_message_is_output_too_large(
    spawning: Spawning, script: str
) -> None:
    w = spawning
    await w.start_worker()  # the default output cap
    job = await w.submit(f"echo a-log-line >&2; {script}")

    reply = await w.reply(job)
    assert (reply.status, reply.error, reply.result) == ("failed", "output_too_large", None)
    assert reply.logs == "a-log-line\n"
    assert await stored_record(w.store, job) == reply  # stored, never left "running"
    await stream_empty(w.nc)


async def test_a_spawner_with_other_consumer_settings_says_so_and_updates_them(
    nc: NATS, store: ExecutionStore, caplog: pytest.LogCaptureFixture
) -> None:
    first = make_settings(ack_wait_seconds=10.0, max_deliver=3)
    second = make_settings(ack_wait_seconds=20.0, max_deliver=5)
    runtime = DockerRuntime(first)
    try:
        await Worker(first, nc=nc, runtime=runtime, store=store).setup()
        with caplog.at_level(logging.WARNING, logger="spawner.worker"):
            caplog.clear()
            await Worker(first, nc=nc, runtime=runtime, store=store).setup()
            same = [r.getMessage() for r in caplog.records]
            caplog.clear()
            await Worker(second, nc=nc, runtime=runtime, store=store).setup()
            other = [r.getMessage() for r in caplog.records]
    finally:
        await runtime.close()

    assert same == []
    [warning] = other
    assert "ack_wait 10.0 -> 20.0" in warning
    assert "max_deliver 904 -> 906" in warning  # SPAWNER_MAX_DELIVER plus the fair-share room
    consumer = await nc.jetstream().consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
    assert (consumer.config.ack_wait, consumer.config.max_deliver) == (20.0, 906)


@pytest.mark.docker
async def test_a_docker_failure_after_the_start_is_not_run_again(
    spawning: Spawning, docker_client: Any
) -> None:
    w = spawning
    since = time.time()
    # Without the pool: the engine's wait tells a cold run's end (the pool's shim tells it).
    worker, _ = await w.start_worker(max_deliver=3, retry_delay_seconds=0.2, pool_max_parked=0)
    runtime = worker.runtime
    assert isinstance(runtime, DockerRuntime)
    assert not isinstance(runtime, PooledRuntime)
    client = await runtime._connected()
    real_wait = client.api.wait

    def answer_lost(container_id: str, **kwargs: Any) -> dict[str, Any]:
        real_wait(container_id, **kwargs)  # the function ran to its end...
        raise requests.exceptions.ConnectionError("connection reset by peer")  # ...unheard

    client.api.wait = answer_lost
    job = await w.submit("echo side-effect")

    reply = await w.reply(job)
    assert (reply.status, reply.error) == ("failed", "runtime_unavailable")
    assert reply.detail is not None
    assert "while the function ran" in reply.detail
    await stream_empty(w.nc)
    consumer = await w.nc.jetstream().consumer_info(EXECUTIONS_STREAM, SPAWNER_CONSUMER)
    assert consumer.delivered.consumer_seq == 1  # delivered once: never redelivered
    actions = await asyncio.to_thread(container_events, docker_client, job.execution_id, since)
    assert actions.count("start") == 1  # the function ran once
    assert "destroy" in actions  # and its container is gone
