"""Pulls against the real engine, from registries on loopback that are not registries: what a
user reads (fixed sentences, never the engine's or the host's text), and bounds (a pull that
never answers ends at the activation's deadline, and frees its worker slot).

- a banner server: accepts and writes a NATS-like ``INFO {...}`` line, then closes;
- a closed port (``127.0.0.1:1``);
- a silent server: accepts and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client as NATS

from faas_common.executions import ExecutionStore
from spawner_service.runtime.docker import DockerRuntime
from spawner_service.worker import Worker
from tests.integration.spawner.conftest import SpecFactory
from tests.integration.spawner.jobs import (
    Replies,
    enqueue,
    eventually,
    make_job,
    make_settings,
    stream_empty,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

RuntimeFactory = Callable[..., DockerRuntime]
BANNER = b'INFO {"server_id":"NDSECRETBANNER","version":"2.10.1","max_payload":1048576}\r\n'
UNREACHABLE = "The image's registry could not be reached (registry_unreachable)"
TIMED_OUT = "The image pull did not finish in time (pull_timed_out)"
ENGINE_WORDS = ("127.0.0.1", "dial tcp", "malformed", "refused", "HTTP", "INFO", "SECRET")


@contextlib.asynccontextmanager
async def loopback_server(*, banner: bytes | None) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server on 127.0.0.1: writes ``banner`` and closes, or (None) stays silent until
    the client goes. Yields its address and how many connections it took."""
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        with contextlib.suppress(OSError):
            if banner is not None:
                writer.write(banner)
                await writer.drain()
            else:
                await reader.read()  # until the engine hangs up
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}", accepted
    finally:
        server.close()
        await server.wait_closed()


async def test_an_open_and_a_closed_registry_port_read_the_same_fixed_sentence(
    make_runtime: RuntimeFactory, spec: SpecFactory
) -> None:
    runtime = make_runtime()
    async with loopback_server(banner=BANNER) as (registry, accepted):
        banner = await runtime.run(spec("echo never", image=f"{registry}/alice/fn:1"))
    closed = await runtime.run(spec("echo never", image="127.0.0.1:1/alice/fn:1"))
    assert accepted  # the engine did talk to the banner server
    for result in (banner, closed):
        assert result.outcome == "image_unavailable"
        assert result.detail == UNREACHABLE
        assert not any(word in result.detail for word in ENGINE_WORDS)
        assert result.stdout == result.stderr_tail == b""


async def test_a_pull_that_never_answers_ends_at_the_activation_deadline(
    make_runtime: RuntimeFactory, spec: SpecFactory
) -> None:
    # The pull itself may take 300 s and stay silent 60 s: the activation's 2 s deadline wins.
    runtime = make_runtime(pull_timeout_seconds=300, pull_connect_seconds=60)
    async with loopback_server(banner=None) as (registry, accepted):
        result = await runtime.run(
            spec("echo never", image=f"{registry}/slow/fn:1", timeout_seconds=2)
        )
        assert result.outcome == "image_unavailable"
        assert result.detail == TIMED_OUT
        assert accepted
        assert runtime.pulls_started == 1


async def test_a_silent_pull_is_abandoned_after_the_connect_bound(
    make_runtime: RuntimeFactory, spec: SpecFactory
) -> None:
    # A long activation: this time the pull's own bound ends it, and the pull is over.
    runtime = make_runtime(pull_connect_seconds=1)
    async with loopback_server(banner=None) as (registry, _):
        result = await runtime.run(
            spec("echo never", image=f"{registry}/slow/fn:1", timeout_seconds=120)
        )
    assert result.outcome == "image_unavailable"
    assert result.detail == TIMED_OUT
    assert runtime._pulls == {}  # the shared pull ended, not only this waiter's wait


# --- through a worker: the record, the reply, the slot --------------------------------------


@pytest.fixture
async def one_slot_worker(nc: NATS, store: ExecutionStore) -> AsyncIterator[Worker]:
    """A worker with a single container slot (so a slot held too long blocks the next job)."""
    settings = make_settings(max_containers=1, pull_connect_seconds=60)
    runtime = DockerRuntime(settings)
    worker = Worker(settings, nc=nc, runtime=runtime, store=store)
    await worker.setup()
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 60)
        await runtime.close()


async def test_a_hung_pull_fails_at_its_deadline_and_frees_the_slot(
    nc: NATS,
    store: ExecutionStore,
    replies: Replies,
    one_slot_worker: Worker,
    prefix: str,
    busybox: str,
) -> None:
    async with loopback_server(banner=None) as (registry, _):
        hung = make_job(
            prefix, "echo never", image=f"{registry}/slow/fn:1", timeout_seconds=2, reply_to=replies
        )
        after = make_job(prefix, "echo next", image=busybox, reply_to=replies)
        await enqueue(nc, store, hung)
        await enqueue(nc, store, after)
        failed, succeeded = await replies.wait(hung.execution_id, after.execution_id, within=60)
    assert (failed.status, failed.error, failed.detail) == (
        "failed",
        "image_unavailable",
        TIMED_OUT,
    )
    stored = await store.get(hung.user_id, hung.execution_id)
    assert stored is not None
    assert stored[0] == failed
    # The only slot came back: the next job ran on it, and nothing is held now.
    assert (succeeded.status, succeeded.result) == ("succeeded", "next")
    await stream_empty(nc)  # both acked

    async def slot_free() -> bool:
        return one_slot_worker.running_jobs == 0

    await eventually(slot_free)


async def test_the_record_of_a_foreign_registry_keeps_no_engine_text(
    nc: NATS, store: ExecutionStore, replies: Replies, one_slot_worker: Worker, prefix: str
) -> None:
    async with loopback_server(banner=BANNER) as (registry, _):
        banner = make_job(prefix, "echo never", image=f"{registry}/alice/fn:1", reply_to=replies)
        closed = make_job(prefix, "echo never", image="127.0.0.1:1/alice/fn:1", reply_to=replies)
        await enqueue(nc, store, banner)
        await enqueue(nc, store, closed)
        records = await replies.wait(banner.execution_id, closed.execution_id, within=60)
    for record in records:
        assert (record.status, record.error, record.detail) == (
            "failed",
            "image_unavailable",
            UNREACHABLE,
        )
        assert not any(word in record.model_dump_json() for word in ("SECRET", "malformed", "dial"))
