"""A raw HTTP/1.1 client for tests of the HTTP edge: bytes as a misbehaving client sends them,
and the answer (status, headers, JSON body) a server writes back before it closes the connection."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
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


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    chunks: list[bytes] = []
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while True:
            try:
                chunk = await reader.read(65_536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def exchange(host: str, port: int, request: bytes, *, half_close: bool = False) -> bytes:
    """Send ``request`` (then EOF when ``half_close``), return all the server wrote until it
    closed the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await read_until_closed(reader)
    finally:
        writer.close()


async def trickle(
    host: str, port: int, start: bytes, drip: bytes, *, interval: float, limit: int
) -> tuple[bytes, int]:
    """Send ``start``, then ``drip`` one byte every ``interval`` seconds (at most ``limit`` bytes)
    until the server answers or closes; returns what it wrote and how many bytes were dripped."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(start)
        await writer.drain()
        read = asyncio.ensure_future(read_until_closed(reader))
        sent = 0
        for byte in drip[:limit]:
            done, _ = await asyncio.wait({read}, timeout=interval)
            if done:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
        return await read, sent
    finally:
        writer.close()


def request_head(
    method: str, path: str, headers: dict[str, str] | None = None, *, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
