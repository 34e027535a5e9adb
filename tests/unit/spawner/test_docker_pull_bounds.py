"""``pull_blocking`` against a fake Docker engine on loopback that streams a pull's progress the
way dockerd does (chunked JSON lines): the total bound holds while progress keeps coming, the
connect bound when the engine falls silent, an error message maps to a fixed problem, and a
spawner process exits without waiting for a pull under way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import docker
import pytest

from spawner_service.runtime.images import (
    IMAGE_NOT_FOUND,
    PULL_TIMED_OUT,
    ImageUnavailable,
    pull_blocking,
)

Script = Callable[[asyncio.StreamWriter], Any]


def chunk(event: dict[str, Any]) -> bytes:
    line = json.dumps(event).encode() + b"\r\n"
    return f"{len(line):x}\r\n".encode() + line + b"\r\n"


@contextlib.asynccontextmanager
async def fake_engine(script: Script) -> AsyncIterator[tuple[str, list[str]]]:
    """A loopback "engine": ``/version`` answers API 1.41, an image inspect 404, and a pull 200
    with a chunked body that ``script`` writes. Yields its URL and the request lines it got."""
    requests_seen: list[str] = []

    def answer(writer: asyncio.StreamWriter, status: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                requests_seen.append(line)
                if "/images/create" in line:
                    break
                if "/version" in line:
                    answer(writer, "200 OK", {"ApiVersion": "1.41"})
                else:
                    answer(writer, "404 Not Found", {"message": "No such image: alice/fn:1"})
                await writer.drain()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            await script(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"tcp://127.0.0.1:{port}", requests_seen
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def engine_api(script: Script) -> AsyncIterator[tuple[Any, list[str]]]:
    async with fake_engine(script) as (url, seen):
        api = docker.APIClient(base_url=url, version="1.41")
        try:
            yield api, seen
        finally:
            api.close()


PROGRESS_MESSAGES = 600


async def progress_forever(writer: asyncio.StreamWriter, sent: list[int] | None = None) -> None:
    """``PROGRESS_MESSAGES`` progress messages, 0.1 s apart (counted in ``sent``)."""
    for n in range(PROGRESS_MESSAGES):
        writer.write(chunk({"status": "Downloading", "progress": f"{n} B"}))
        await writer.drain()
        if sent is not None:
            sent.append(n)
        await asyncio.sleep(0.1)


async def then_silence(writer: asyncio.StreamWriter) -> None:
    writer.write(chunk({"status": "Pulling from alice/fn"}))
    await writer.drain()
    await asyncio.sleep(60)


async def an_error(writer: asyncio.StreamWriter) -> None:
    writer.write(chunk({"status": "Pulling from alice/fn"}))
    writer.write(chunk({"error": "manifest for alice/fn:1 not found: manifest unknown"}))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def pull(api: Any, *, connect: float = 30, total: float = 300) -> None:
    pull_blocking(api, "alice/fn:1", connect=connect, total=total)


@pytest.mark.timeout(30)
async def test_steady_progress_still_ends_at_the_total_bound() -> None:
    async with engine_api(progress_forever) as (api, seen):
        with pytest.raises(ImageUnavailable) as failed:
            await asyncio.to_thread(pull, api, total=1.0)
    assert failed.value.problem == PULL_TIMED_OUT
    assert seen == ["POST /v1.41/images/create?fromImage=alice%2Ffn&tag=1 HTTP/1.1"]


@pytest.mark.timeout(30)
async def test_an_engine_silent_mid_pull_ends_at_the_connect_bound() -> None:
    async with engine_api(then_silence) as (api, _):
        with pytest.raises(ImageUnavailable) as failed:
            await asyncio.to_thread(pull, api, connect=0.5)
    assert failed.value.problem == PULL_TIMED_OUT


@pytest.mark.timeout(30)
async def test_an_error_message_maps_to_its_problem_and_keeps_the_text_for_the_log() -> None:
    async with engine_api(an_error) as (api, _):
        with pytest.raises(ImageUnavailable) as failed:
            await asyncio.to_thread(pull, api)
    assert failed.value.problem == IMAGE_NOT_FOUND
    assert "manifest unknown" in failed.value.engine_text


SPAWNER = """\
import asyncio, sys, time
from spawner_service.config import SpawnerSettings
from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.docker import DockerRuntime

async def main() -> None:
    runtime = DockerRuntime(SpawnerSettings(max_containers=1), base_url=sys.argv[1])
    spec = RunSpec("e-1", "alice/fn:1", "x", {}, 1, 64, time.time() + 1)
    print((await runtime.run(spec)).detail, flush=True)
    await runtime.close()

asyncio.run(main())
"""


@pytest.mark.timeout(120)
async def test_a_spawner_exits_without_waiting_for_a_pull_under_way() -> None:
    # The pull goes on (steady progress, far from its bounds) when the activation's 1 s
    # deadline ends the run: the process exits then, and its connection ends the pull.
    sent: list[int] = []
    async with fake_engine(lambda writer: progress_forever(writer, sent)) as (url, seen):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SPAWNER, url, stdout=asyncio.subprocess.PIPE
        )
        output, _ = await process.communicate()
    assert process.returncode == 0
    assert output.decode().strip() == "The image pull did not finish in time (pull_timed_out)"
    assert any("/images/create" in line for line in seen)
    assert 0 < len(sent) < PROGRESS_MESSAGES  # cut off by the exit, not waited for
