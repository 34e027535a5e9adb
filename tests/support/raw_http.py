"""A raw HTTP/1.1 client for tests of the HTTP edge: bytes as a misbehaving client sends them,
and the answer (status, headers, JSON body) a server writes back before it closes the connection.

Plain non-blocking sockets driven by the event loop (``loop.sock_*``): what the server sent
before it reset the connection is still read (a stream reader would drop it on the reset).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANSWER_TIMEOUT = 30.0
"""Upper bound for any answer: only a server that never answers reaches it."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(raw: bytes) -> Answer | None:
    """The first response in ``raw`` (None when nothing came back)."""
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return Answer(int(status_line.split(" ", 2)[1]), headers, body[:length])


def request_head(
    method: str, path: str, headers: dict[str, str] | None = None, *, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Connection:
    """One client connection; ``close()`` it (or use ``async with``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    def half_close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    async def receive(self) -> bytes:
        """The next bytes the server sent (``b""`` once it closed or reset the connection)."""
        try:
            return await self.loop.sock_recv(self.sock, 65_536)
        except ConnectionResetError:
            return b""

    async def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        chunks: list[bytes] = []
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while chunk := await self.receive():
                chunks.append(chunk)
        return b"".join(chunks)

    async def read_response(self) -> Answer:
        """One whole response with a ``Content-Length`` (the connection stays open)."""
        raw = b""
        async with asyncio.timeout(ANSWER_TIMEOUT):
            while b"\r\n\r\n" not in raw or len(raw) < _expected_size(raw):
                chunk = await self.receive()
                if not chunk:
                    raise ConnectionError(f"closed after {raw!r}")
                raw += chunk
        answer = parse(raw)
        assert answer is not None
        return answer

    def close(self) -> None:
        self.sock.close()


def _expected_size(raw: bytes) -> int:
    head, _, _ = raw.partition(b"\r\n\r\n")
    answer = parse(head + b"\r\n\r\n")
    assert answer is not None
    return len(head) + 4 + int(answer.headers.get("content-length", "0"))


async def exchange(
    host: str, port: int, request: bytes, *, half_close: bool = False, pause: float = 0.0
) -> bytes:
    """Send ``request``, wait ``pause`` seconds (time for the server to read it), send EOF when
    ``half_close``; return all the server wrote until it closed the connection."""
    async with await Connection.open(host, port) as connection:
        await connection.send(request)
        await asyncio.sleep(pause)
        if half_close:
            connection.half_close()
        return await connection.read_until_closed()


async def trickle(
    host: str, port: int, start: bytes, drip: bytes, *, interval: float, limit: int
) -> tuple[bytes, int]:
    """Send ``start``, then ``drip`` one byte every ``interval`` seconds (at most ``limit`` bytes)
    until the server answers or closes; returns what it wrote and how many bytes were dripped."""
    async with await Connection.open(host, port) as connection:
        await connection.send(start)
        read = asyncio.ensure_future(connection.read_until_closed())
        sent = 0
        for byte in drip[:limit]:
            done, _ = await asyncio.wait({read}, timeout=interval)
            if done:
                break
            try:
                await connection.send(bytes([byte]))
            except OSError:
                break
            sent += 1
        return await read, sent


async def open_half_sent(host: str, port: int, count: int, start: bytes) -> list[Connection]:
    """``count`` connections, each having sent ``start`` (a request head without its end)."""
    connections: list[Connection] = []
    try:
        for _ in range(count):
            connection = await Connection.open(host, port)
            connections.append(connection)
            await connection.send(start)
    except BaseException:
        for connection in connections:
            connection.close()
        raise
    return connections


async def first_closed(connections: list[Connection], count: int) -> list[bytes]:
    """What the server wrote on the first ``count`` of ``connections`` that it closed."""
    reads = [asyncio.ensure_future(connection.read_until_closed()) for connection in connections]
    closed: list[bytes] = []
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            for read in asyncio.as_completed(reads):
                closed.append(await read)
                if len(closed) == count:
                    break
    finally:
        for read in reads:
            read.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    return closed


def open_sockets(pid: int) -> int:
    """How many sockets process ``pid`` holds open (from ``/proc``)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    return count
