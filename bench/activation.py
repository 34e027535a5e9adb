"""Activation latency and throughput: the platform against plain Docker, in one run.

For a trivial function (busybox ``echo``), measures sync activation latency (p50/p90/p99) at
concurrency 1 and 8, and throughput, these ways:

- ``cold``: ``POST /publisher/publish`` through the local stack's HTTP API (started here with
  ``./bin/run.sh`` on free loopback ports and a temporary data directory) with the prewarm pool
  off (``SPAWNER_POOL_MAX_PARKED=0``): every call creates and starts its container;
- ``pool``: the same with the pool on (the default), calls back to back: hits and misses mixed
  as the refill allows (the hit ratio is printed);
- ``pool hit``: concurrency 1, each call ``--pace`` seconds after the previous one ended, so
  that the pool has parked its replacement: only the calls that were hits (their record has a
  ``pool`` phase) are counted;
- ``pool miss``: concurrency 1, each call to a function of its own (another env: another
  shape), so every call is a miss (and, a function called once, parks nothing);
- ``docker run``: ``docker run --rm --network none IMAGE ARG``, one CLI process per call;
- ``sdk``: the Docker SDK's bare create / start / wait / logs / remove.

Both stacks run side by side for the whole run. At concurrency 1, ``cold``, ``pool miss``,
``docker run`` and ``sdk`` take turns call by call (one call of each per round), so each meets
the engine as it is in the same seconds: this machine's engine starts containers at rates that
drift by up to half over minutes, which rows measured minutes apart would take for differences
between the modes. At concurrency 8 each row is ``--rounds`` rounds of ``--calls`` calls back to
back, the modes taking turns round by round (each round starting one mode further), so that the
drift falls on every mode alike; a round begins ``QUIET_SECONDS`` after the one before, and its
first ``concurrency`` calls to end are not counted (its ramp, and the pool's containers parked
during the pause: not the steady state of calls back to back).

For the platform rows, ``overhead`` is the p50 of each call's end-to-end time minus its
record's ``run`` phase (the function's own time, hand-off to exit): what the platform adds;
``handler`` is the same from the publish handler's own time (its ``Server-Timing`` ``total``):
the part inside the platform's process, without the HTTP exchange around it (the client, the
connection, the middleware, authentication, the bodies).
Everything stays on this machine; containers run with network ``none``; every loop is bounded by
``--calls`` and ``--max-seconds``. Prints one table and the ratios against ``docker run`` and,
for ``pool`` and ``pool miss``, against ``cold``.

    uv run python bench/activation.py [--calls 40] [--rounds 3] [--max-seconds 120] [--pace 0.6]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import busybox_image  # noqa: E402
from tests.support.nats_server import free_port  # noqa: E402

ARGUMENT = "echo hello"
MODES = ["cold", "pool hit", "pool", "pool miss", "docker run", "sdk"]
"""The table's order of rows."""
RATIOS = {
    "docker run": [mode for mode in MODES if mode != "docker run"],
    "cold": ["pool", "pool miss"],
}
"""The rows compared with each baseline."""
QUIET_SECONDS = 3.0
"""Pause before a round at concurrency above 1: the removals and parks the one before led to
(a used container is removed once its call is settled, at the latest 2 s after its end)."""


@dataclass
class Outcome:
    """One call: whether it was right, and for the platform its record's timings."""

    ok: bool
    timings: dict[str, float] | None = None
    handler_ms: float | None = None
    """The publish handler's own time (its ``Server-Timing`` ``total``)."""


Call = Callable[[], Awaitable[Outcome]]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[index]


@dataclass
class Row:
    mode: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    errors: int = 0
    overheads_ms: list[float] = field(default_factory=list)
    hits: int = 0
    handler_overheads_ms: list[float] = field(default_factory=list)
    """The handler's time minus the ``run`` phase: the overhead inside the platform's process,
    without the HTTP exchange (client, connection, middleware, authentication, bodies)."""
    phases_ms: dict[str, list[float]] = field(default_factory=dict)
    """The record's timings of every counted call, per phase."""

    def add(self, outcome: Outcome, elapsed_ms: float, *, hits_only: bool = False) -> None:
        """Count one call; ``hits_only``: a call no prewarmed container took is not counted
        (nor is it an error)."""
        if not outcome.ok:
            self.errors += 1
            return
        timings = outcome.timings or {}
        hit = "pool" in timings
        self.hits += hit
        if hits_only and not hit:
            return
        self.latencies_ms.append(elapsed_ms)
        if outcome.timings is not None:
            self.overheads_ms.append(elapsed_ms - timings.get("run", 0.0))
        if outcome.handler_ms is not None:
            self.handler_overheads_ms.append(outcome.handler_ms - timings.get("run", 0.0))
        for phase, ms in timings.items():
            self.phases_ms.setdefault(phase, []).append(ms)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def extend(self, other: Row) -> None:
        """Count ``other``'s calls (another round of the same mode) in this row."""
        self.latencies_ms += other.latencies_ms
        self.wall_seconds += other.wall_seconds
        self.errors += other.errors
        self.overheads_ms += other.overheads_ms
        self.hits += other.hits
        self.handler_overheads_ms += other.handler_overheads_ms
        for phase, values in other.phases_ms.items():
            self.phases_ms.setdefault(phase, []).extend(values)

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.wall_seconds if self.wall_seconds else 0.0


async def timed(call: Call) -> tuple[Outcome, float]:
    started = time.perf_counter()
    outcome = await call()
    return outcome, (time.perf_counter() - started) * 1000


async def measure(
    mode: str,
    concurrency: int,
    calls: int,
    max_seconds: float,
    call: Call,
    *,
    pace: float = 0.0,
    hits_only: bool = False,
    skip: int = 0,
) -> Row:
    """``calls`` calls by ``concurrency`` workers, each waiting ``pace`` seconds between two
    (``Row.add`` for ``hits_only``); with ``skip``, ``skip`` calls more, the first ``skip`` to
    end not counted and the time counted from the last of them."""
    row = Row(mode, concurrency)
    remaining, skipped = calls + skip, 0
    deadline = time.monotonic() + max_seconds
    lock = asyncio.Lock()
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal remaining, skipped, started
        while True:
            async with lock:
                if remaining <= 0 or time.monotonic() > deadline:
                    return
                remaining -= 1
            outcome, elapsed = await timed(call)
            if skipped < skip:
                skipped += 1
                started = time.perf_counter()
            else:
                row.add(outcome, elapsed, hits_only=hits_only)
            await asyncio.sleep(pace)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    row.wall_seconds = time.perf_counter() - started - (pace * calls / concurrency)
    return row


async def rotate(modes: dict[str, Call], calls: int, max_seconds: float) -> list[Row]:
    """One call of each mode in turn, ``calls`` rounds (``max_seconds`` per mode), at
    concurrency 1: each mode meets the engine as it is in the same seconds as the others. Each
    round starts one mode further, so that what a call leaves behind falls on every mode."""
    rows = {mode: Row(mode, 1) for mode in modes}
    order = list(modes.items())
    deadline = time.monotonic() + max_seconds * len(modes)
    for turn in range(calls):
        if time.monotonic() > deadline:
            break
        shift = turn % len(order)
        for mode, call in order[shift:] + order[:shift]:
            outcome, elapsed = await timed(call)
            rows[mode].add(outcome, elapsed)
            rows[mode].wall_seconds += elapsed / 1000
    return list(rows.values())


async def alternate(
    modes: dict[str, Call], concurrency: int, args: argparse.Namespace
) -> list[Row]:
    """``args.rounds`` rounds of ``args.calls`` calls per mode at ``concurrency``, the modes in
    turn round by round, each round starting one mode further. A round begins after the engine
    work the previous one led to (removals, refills) and counts from the end of its first
    ``concurrency`` calls, so that neither what a round leaves behind (the containers the pool
    parked after it) nor its ramp falls on the next."""
    rows = {mode: Row(mode, concurrency) for mode in modes}
    order = list(modes.items())
    for turn in range(args.rounds):
        shift = turn % len(order)
        for mode, call in order[shift:] + order[:shift]:
            await asyncio.sleep(QUIET_SECONDS)
            round_ = await measure(
                mode, concurrency, args.calls, args.max_seconds, call, skip=concurrency
            )
            rows[mode].extend(round_)
    return list(rows.values())


def docker_run_call(image: str) -> Call:
    async def call() -> Outcome:
        process = await asyncio.create_subprocess_exec(
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            image,
            ARGUMENT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
        return Outcome(process.returncode == 0 and out.strip() == b"hello")

    return call


def sdk_call(client: docker.DockerClient, image: str) -> Call:
    def run() -> bool:
        container = client.containers.create(image, [ARGUMENT], network_mode="none")
        try:
            container.start()
            status = container.wait(timeout=30)
            out: bytes = container.logs(stdout=True, stderr=False)
            return status.get("StatusCode") == 0 and out.strip() == b"hello"
        finally:
            container.remove(force=True)

    async def call() -> Outcome:
        return Outcome(await asyncio.to_thread(run))

    return call


class LocalStack:
    def __init__(self, **env: str) -> None:
        self.extra_env = env
        self.port = free_port()
        self.data = tempfile.TemporaryDirectory(prefix="faas-bench-")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalStack:
        env = {
            **os.environ,
            "FAAS_PORT": str(self.port),
            "FAAS_NATS_PORT": str(free_port()),
            "FAAS_DATA_DIR": self.data.name,
            "LOG_LEVEL": "WARNING",
            "SPAWNER_MAX_CONTAINERS": "8",
            **self.extra_env,
        }
        self.log = Path(self.data.name) / "stack.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(ROOT / "bin" / "run.sh")],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "FaaS platform ready" in self.log.read_text(errors="replace"):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError("the local stack did not start:\n" + self.log.read_text()[-3000:])

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.data.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def platform_client(stack: LocalStack) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        base_url=stack.base, timeout=60, limits=httpx.Limits(max_connections=16)
    )
    user = {"username": f"bench-{uuid.uuid4().hex[:8]}", "password": "benchmark-pass"}
    (await client.post("/auth/register", json=user)).raise_for_status()
    token = (await client.post("/auth/login", json=user)).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


async def register(client: httpx.AsyncClient, name: str, image: str, **env: str) -> str:
    function = {"name": name, "description": "bench", "image": image, "env": env}
    (await client.post("/registry/functions", json=function)).raise_for_status()
    return name


def platform_call(client: httpx.AsyncClient, name: str) -> Call:
    async def call() -> Outcome:
        response = await client.post(
            "/publisher/publish", json={"name": name, "argument": ARGUMENT}
        )
        body = response.json()
        ok = response.status_code == 200 and body.get("result") == "hello"
        total = re.search(r"\btotal;dur=([0-9.]+)", response.headers.get("server-timing", ""))
        handler_ms = float(total.group(1)) if total else None
        return Outcome(ok, body.get("timings") or {}, handler_ms)

    return call


async def fresh_function_calls(client: httpx.AsyncClient, image: str, calls: int) -> Call:
    """Each call to a function of its own, registered beforehand (its own env: a shape that was
    never parked)."""
    names = [await register(client, f"miss-{i}", image, BENCH=f"miss-{i}") for i in range(calls)]

    async def call() -> Outcome:
        return await platform_call(client, names.pop())()

    return call


def _p50_column(values: list[float]) -> str:
    return f"{percentile(values, 50):>10.1f}" if values else f"{'':>10}"


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'mode':<12}{'conc':>5}{'calls':>7}{'errors':>7}{'hits':>6}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'mean ms':>9}{'calls/s':>9}{'overhead':>10}{'handler':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = sorted(rows, key=lambda row: (MODES.index(row.mode), row.concurrency))
    for row in rows:
        mean = statistics.fmean(row.latencies_ms) if row.latencies_ms else float("nan")
        print(
            f"{row.mode:<12}{row.concurrency:>5}{len(row.latencies_ms):>7}{row.errors:>7}"
            f"{row.hits:>6}{row.percentile(50):>9.0f}{row.percentile(90):>9.0f}"
            f"{row.percentile(99):>9.0f}{mean:>9.0f}{row.throughput:>9.2f}"
            f"{_p50_column(row.overheads_ms)}{_p50_column(row.handler_overheads_ms)}"
        )
    for row in rows:
        if row.phases_ms:
            phases = ", ".join(
                f"{phase} {percentile(values, 50):.1f}" for phase, values in row.phases_ms.items()
            )
            print(f"{row.mode} at concurrency {row.concurrency}, phases p50 (ms): {phases}")
    by_key = {(row.mode, row.concurrency): row for row in rows}
    for (mode, concurrency), row in by_key.items():
        for baseline_mode in ("docker run", "cold"):
            baseline = by_key.get((baseline_mode, concurrency))
            if mode in RATIOS[baseline_mode] and baseline is not None and baseline.latencies_ms:
                print(
                    f"{mode} at concurrency {concurrency}: p50 {row.percentile(50):.0f} ms vs "
                    f"{baseline_mode} {baseline.percentile(50):.0f} ms "
                    f"({baseline.percentile(50) / row.percentile(50):.2f}x faster), throughput "
                    f"{row.throughput:.2f} vs {baseline.throughput:.2f} calls/s "
                    f"({row.throughput / baseline.throughput:.2f}x)"
                )


async def concurrency_one_rows(
    cold: Call,
    pool: Call,
    pool_http: httpx.AsyncClient,
    image: str,
    baselines: dict[str, Call],
    args: argparse.Namespace,
) -> list[Row]:
    """The rows at concurrency 1 that take turns, and the paced ``pool hit`` row (none when
    ``--concurrency`` leaves 1 out)."""
    if 1 not in args.concurrency:
        return []
    misses = await fresh_function_calls(pool_http, image, args.calls)
    modes = {"cold": cold, "pool miss": misses, **baselines}
    rows = await rotate(modes, args.calls, args.max_seconds)
    await asyncio.sleep(args.pace)
    hits = measure(
        "pool hit", 1, args.calls, args.max_seconds, pool, pace=args.pace, hits_only=True
    )
    return [*rows, await hits]


async def all_rows(
    stacks: tuple[LocalStack, LocalStack],
    client: docker.DockerClient,
    image: str,
    args: argparse.Namespace,
) -> list[Row]:
    """Both stacks run throughout: the cold one (pool off) and the one with the pool."""
    cold_http, pool_http = [await platform_client(stack) for stack in stacks]
    calls, max_seconds = args.calls, args.max_seconds
    try:
        cold = platform_call(cold_http, await register(cold_http, "echo", image))
        pool = platform_call(pool_http, await register(pool_http, "echo", image))
        await cold()  # warm-up: catalog, stream, consumer
        await pool()
        baselines = {"docker run": docker_run_call(image), "sdk": sdk_call(client, image)}
        rows = await concurrency_one_rows(cold, pool, pool_http, image, baselines, args)
        if 1 in args.concurrency:  # back to back; the others took turns above
            rows.append(await measure("pool", 1, calls, max_seconds, pool))
        modes = {"cold": cold, "pool": pool, **baselines}
        for concurrency in args.concurrency:
            if concurrency > 1:
                rows += await alternate(modes, concurrency, args)
    finally:
        await cold_http.aclose()
        await pool_http.aclose()
    return rows


async def main(args: argparse.Namespace) -> None:
    image = busybox_image()
    client = docker.from_env(max_pool_size=max(args.concurrency) * 2 + 4)
    try:
        with LocalStack(SPAWNER_POOL_MAX_PARKED="0") as cold, LocalStack() as pooled:
            rows = await all_rows((cold, pooled), client, image, args)
    finally:
        client.close()
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per mode and concurrency")
    parser.add_argument(
        "--max-seconds", type=float, default=120, help="time cap per row (per round above 1)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode above concurrency 1")
    parser.add_argument(
        "--pace", type=float, default=0.6, help="seconds between two calls of the pool hit row"
    )
    args = parser.parse_args()
    asyncio.run(main(args))
