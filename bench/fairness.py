"""Noisy neighbour: tenant B's sync latency while tenant A saturates the slots, in one run.

Against the local stack (``./bin/run.sh`` on free loopback ports, a temporary data directory, its
one spawner with ``SPAWNER_MAX_CONTAINERS`` = 4 slots), tenant B makes ``--calls`` sync calls of a
trivial function (busybox ``echo``), one at a time:

- ``B alone``: nothing else runs;
- ``B, A saturating``: tenant A keeps its in-flight limit full of async ``sleep`` calls (each
  ``--a-seconds`` long; a refused one (429) is simply tried again), so every slot is A's whenever
  B's call arrives;
- ``B, A saturating, FIFO`` (unless ``--no-fifo``): the same on a second stack started with
  ``SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS=0``, the arrival order the platform had without a fair
  share.

Everything stays on this machine; containers run with network ``none``; every loop is bounded by
``--calls``, ``--max-seconds`` and ``--max-a-calls``. Prints one table.

    uv run python bench/fairness.py [--calls 10] [--a-seconds 3] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.activation import LocalStack, Row, measure, platform_call  # noqa: E402
from tests.support.images import busybox_image  # noqa: E402

FIFO_ENV = {"SPAWNER_FAIR_SHARE_MAX_DEFER_SECONDS": "0"}


@dataclass
class Noise:
    accepted: int = 0
    refused: int = 0


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """``extra`` in the environment the stack is started with, restored afterwards."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def tenant(stack: LocalStack, image: str, name: str) -> httpx.AsyncClient:
    """A new user with one busybox function called ``name``, and a client holding their token."""
    client = httpx.AsyncClient(base_url=stack.base, timeout=120)
    user = {"username": f"bench-{uuid.uuid4().hex[:8]}", "password": "benchmark-pass"}
    (await client.post("/auth/register", json=user)).raise_for_status()
    token = (await client.post("/auth/login", json=user)).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    function = {"name": name, "description": "bench", "image": image, "timeout_seconds": 60}
    (await client.post("/registry/functions", json=function)).raise_for_status()
    return client


async def saturate(
    client: httpx.AsyncClient, seconds: float, stop: asyncio.Event, max_calls: int, noise: Noise
) -> None:
    """Keep tenant A's in-flight limit full of async ``sleep`` calls until ``stop``."""
    body = {"name": "sleep", "argument": f"sleep {seconds:g}", "async": True}
    while not stop.is_set() and noise.accepted < max_calls:
        response = await client.post("/publisher/publish", json=body)
        if response.status_code == 202:
            noise.accepted += 1
        else:
            noise.refused += 1  # at A's limit: wait for one of A's calls to end
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def run_stack(args: argparse.Namespace, image: str, *, fifo: bool) -> list[Row]:
    rows: list[Row] = []
    with environment(FIFO_ENV if fifo else {}), LocalStack() as stack:
        b = await tenant(stack, image, "echo")
        a = await tenant(stack, image, "sleep")
        try:
            call = platform_call(b, "echo")
            await call()  # warm-up: catalog, stream, consumer
            if not fifo:
                rows.append(await measure("B alone", 1, args.calls, args.max_seconds, call))
            stop, noise = asyncio.Event(), Noise()
            noisy = asyncio.create_task(saturate(a, args.a_seconds, stop, args.max_a_calls, noise))
            await asyncio.sleep(args.a_seconds / 2)  # every slot is A's now
            label = "B, A saturating" + (", FIFO" if fifo else "")
            rows.append(await measure(label, 1, args.calls, args.max_seconds, call))
            stop.set()
            await noisy
            print(f"{label}: A's calls accepted {noise.accepted}, refused (429) {noise.refused}")
        finally:
            await a.aclose()
            await b.aclose()
    return rows


def print_table(rows: list[Row]) -> None:
    header = f"{'tenant B sync calls':<26}{'calls':>7}{'errors':>7}{'p50 ms':>9}{'p90 ms':>9}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.mode:<26}{len(row.latencies_ms):>7}{row.errors:>7}"
            f"{row.percentile(50):>9.0f}{row.percentile(90):>9.0f}"
        )


async def main(args: argparse.Namespace) -> None:
    image = busybox_image()
    rows = await run_stack(args, image, fifo=False)
    if args.fifo:
        rows += await run_stack(args, image, fifo=True)
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10, help="B's calls per row")
    parser.add_argument("--a-seconds", type=float, default=3.0, help="length of A's calls")
    parser.add_argument("--max-seconds", type=float, default=120, help="time cap per row")
    parser.add_argument("--max-a-calls", type=int, default=400, help="cap on A's calls per row")
    parser.add_argument("--no-fifo", dest="fifo", action="store_false", help="skip the FIFO row")
    asyncio.run(main(parser.parse_args()))
