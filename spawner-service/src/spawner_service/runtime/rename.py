"""A prewarmed container's rename, on its way to the engine before the call's frame.

A call takes a parked container by renaming it for its execution (``docker.pooled_name``): a
spawner that adopts the job after this one died finds the container by that name. The rename has
to reach the engine before the function can start, but the engine's answer takes about 8 ms (it
writes the container's configuration to disk), and waiting for it would be on every call's path.
So the request is written on a connection of its own to the engine's unix socket, and the frame
only once the whole request is in the socket: the engine carries out a request it has received
even if this spawner dies right after. The answer is read off the call's path (the returned
task). An engine reached any other way (TCP, SSH) has no such socket: ``engine_socket`` is None
and the caller renames through the SDK, awaiting the answer, before the frame.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

TIMEOUT = 60.0
"""Longest the request's sending, and then its answer, may take (the SDK's API timeout)."""
ANSWER_MAX_BYTES = 64 * 1024
"""The most of an answer read (for a refusal's message)."""


class RenameRefused(Exception):
    """The engine answered the rename with an error status."""


def engine_socket(client: Any) -> str | None:
    """The path of the unix socket ``client`` reaches its engine through, or None."""
    try:
        adapter = client.api.get_adapter(client.api.base_url)
    except Exception:  # the SDK's adapters raise their own kinds for unknown schemes
        return None
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) and path else None


def rename_request(api_version: str, container_id: str, name: str) -> bytes:
    """The HTTP request of ``POST /containers/{id}/rename`` (one request per connection)."""
    target = f"/v{api_version}/containers/{quote(container_id, safe='')}/rename?name={quote(name)}"
    return (
        f"POST {target} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ).encode("ascii")


async def send_rename(
    socket_path: str, api_version: str, container_id: str, name: str
) -> asyncio.Task[None]:
    """Write the rename request to the engine; returns once all of it is in the socket, with
    the task that reads the answer (``RenameRefused`` for an error status or no answer at all,
    ``TimeoutError`` when it takes longer than ``TIMEOUT``). Raises ``OSError`` or
    ``TimeoutError`` when the request cannot be sent."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.transport.set_write_buffer_limits(high=0)  # drain: until all is in the socket
            writer.write(rename_request(api_version, container_id, name))
            await writer.drain()
        except BaseException:
            writer.transport.abort()
            raise
    answer = asyncio.create_task(_answer(reader), name=f"rename-{container_id[:12]}")
    # Nothing is left to send: dropping the connection at once (also when the task is cancelled
    # before it ran) loses nothing the engine has not got.
    answer.add_done_callback(lambda _: writer.transport.abort())
    return answer


async def _answer(reader: asyncio.StreamReader) -> None:
    async with asyncio.timeout(TIMEOUT):
        status_line = await reader.readline()
        parts = status_line.split(maxsplit=2)
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        if 200 <= status < 300:
            return
        rest = b""
        while len(rest) < ANSWER_MAX_BYTES and (chunk := await reader.read(ANSWER_MAX_BYTES)):
            rest += chunk  # to the end: the engine closes the connection after its answer
        said = (status_line + rest).decode("utf-8", "replace").strip()
        raise RenameRefused(said.splitlines()[-1] if said else "no answer")
