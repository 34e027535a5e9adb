"""The rename of a taken prewarmed container: its request is wholly with the engine when
``send_rename`` returns (before the call's frame is written), its answer is read afterwards.
A small unix-socket server stands in for the engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from spawner_service.runtime.rename import (
    RenameRefused,
    engine_socket,
    rename_request,
    send_rename,
)

NAME = "faas-0123abcd-a1b2c3-1796308014"


@dataclass
class Engine:
    """Reads one request per connection; answers when ``answer`` is set."""

    path: str
    answer: asyncio.Event = field(default_factory=asyncio.Event)
    reply: bytes = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    requests: list[bytes] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    served: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
            self.received.set()
            await self.answer.wait()
            writer.write(self.reply)
            await writer.drain()
        except ConnectionError:
            pass  # the sender went away
        finally:
            writer.close()
            self.served.set()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    fake = Engine(str(tmp_path / "engine.sock"))
    server = await asyncio.start_unix_server(fake.serve, fake.path)
    try:
        yield fake
    finally:
        fake.answer.set()
        if fake.requests:
            await asyncio.wait_for(fake.served.wait(), 5)
        server.close()
        await server.wait_closed()


def test_the_request_is_the_engine_apis_rename() -> None:
    request = rename_request("1.41", "c0ffee", NAME)
    assert (
        request
        == (
            f"POST /v1.41/containers/c0ffee/rename?name={NAME} HTTP/1.1\r\nHost: docker\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n"
        ).encode()
    )


async def test_the_request_reaches_the_engine_before_its_answer_is_awaited(
    engine: Engine,
) -> None:
    answer = await send_rename(engine.path, "1.41", "c0ffee", NAME)
    # The engine has the whole request although nothing waits for its answer yet.
    await asyncio.wait_for(engine.received.wait(), 5)
    assert engine.requests == [rename_request("1.41", "c0ffee", NAME)]
    assert not answer.done()
    engine.answer.set()
    await asyncio.wait_for(answer, 5)


async def test_the_request_stays_with_the_engine_when_the_sender_goes_away(
    engine: Engine,
) -> None:
    answer = await send_rename(engine.path, "1.41", "c0ffee", NAME)
    answer.cancel()  # the spawner is gone: its end of the connection closes
    await asyncio.gather(answer, return_exceptions=True)
    await asyncio.wait_for(engine.received.wait(), 5)
    assert engine.requests == [rename_request("1.41", "c0ffee", NAME)]


async def test_an_error_status_is_a_refusal_with_the_engines_message(engine: Engine) -> None:
    engine.reply = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n"
        b'{"message":"No such container: c0ffee"}'
    )
    engine.answer.set()
    answer = await send_rename(engine.path, "1.41", "c0ffee", NAME)
    with pytest.raises(RenameRefused, match="No such container"):
        await asyncio.wait_for(answer, 5)


async def test_no_answer_at_all_is_a_refusal(engine: Engine) -> None:
    engine.reply = b""
    engine.answer.set()
    answer = await send_rename(engine.path, "1.41", "c0ffee", NAME)
    with pytest.raises(RenameRefused, match="no answer"):
        await asyncio.wait_for(answer, 5)


async def test_an_engine_that_is_not_listening_cannot_be_sent_to(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await send_rename(str(tmp_path / "absent.sock"), "1.41", "c0ffee", NAME)


def test_only_a_unix_socket_client_has_an_engine_socket() -> None:
    def client(adapter: object) -> SimpleNamespace:
        api = SimpleNamespace(base_url="http+docker://localhost", get_adapter=lambda _: adapter)
        return SimpleNamespace(api=api)

    assert engine_socket(client(SimpleNamespace(socket_path="/run/docker.sock"))) == (
        "/run/docker.sock"
    )
    assert engine_socket(client(SimpleNamespace())) is None  # TCP, TLS: no socket path

    def no_adapter(_: str) -> object:
        raise ValueError("no connection adapters were found")

    api = SimpleNamespace(base_url="ssh://host", get_adapter=no_adapter)
    assert engine_socket(SimpleNamespace(api=api)) is None
