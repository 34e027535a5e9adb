"""Activation latency and throughput: the platform against plain Docker, in one run.

For a trivial function (busybox ``echo``), measures sync activation latency (p50/p90/p99) at
concurrency 1 and 8, and throughput, three ways:

- ``platform``: ``POST /publisher/publish`` through the local stack's HTTP API (started here
  with ``./bin/run.sh`` on free loopback ports and a temporary data directory);
- ``docker run``: ``docker run --rm --network none IMAGE ARG``, one CLI process per call;
- ``sdk``: the Docker SDK's bare create / start / wait / logs / remove.

Everything stays on this machine; containers run with network ``none``; every loop is bounded by
``--calls`` and ``--max-seconds``. Prints one table.

    uv run python bench/activation.py [--calls 40] [--max-seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import busybox_image  # noqa: E402
from tests.support.nats_server import free_port  # noqa: E402

ARGUMENT = "echo hello"


@dataclass
class Row:
    mode: str
    concurrency: int
    latencies_ms: list[float]
    wall_seconds: float
    errors: int

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.wall_seconds if self.wall_seconds else 0.0


async def measure(
    mode: str,
    concurrency: int,
    calls: int,
    max_seconds: float,
    call: Callable[[], Awaitable[bool]],
) -> Row:
    latencies: list[float] = []
    errors = 0
    remaining = calls
    deadline = time.monotonic() + max_seconds
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal remaining, errors
        while True:
            async with lock:
                if remaining <= 0 or time.monotonic() > deadline:
                    return
                remaining -= 1
            started = time.perf_counter()
            ok = await call()
            elapsed = (time.perf_counter() - started) * 1000
            if ok:
                latencies.append(elapsed)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Row(mode, concurrency, latencies, time.perf_counter() - started, errors)


def docker_run_call(image: str) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
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
        return process.returncode == 0 and out.strip() == b"hello"

    return call


def sdk_call(client: docker.DockerClient, image: str) -> Callable[[], Awaitable[bool]]:
    def run() -> bool:
        container = client.containers.create(image, [ARGUMENT], network_mode="none")
        try:
            container.start()
            status = container.wait(timeout=30)
            out: bytes = container.logs(stdout=True, stderr=False)
            return status.get("StatusCode") == 0 and out.strip() == b"hello"
        finally:
            container.remove(force=True)

    async def call() -> bool:
        return await asyncio.to_thread(run)

    return call


class LocalStack:
    def __init__(self) -> None:
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


async def platform_client(stack: LocalStack, image: str) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(
        base_url=stack.base, timeout=60, limits=httpx.Limits(max_connections=16)
    )
    user = {"username": f"bench-{uuid.uuid4().hex[:8]}", "password": "benchmark-pass"}
    (await client.post("/auth/register", json=user)).raise_for_status()
    token = (await client.post("/auth/login", json=user)).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    name = "echo"
    response = await client.post(
        "/registry/functions", json={"name": name, "description": "bench", "image": image}
    )
    response.raise_for_status()
    return client, name


def platform_call(client: httpx.AsyncClient, name: str) -> Callable[[], Awaitable[bool]]:
    async def call() -> bool:
        response = await client.post(
            "/publisher/publish", json={"name": name, "argument": ARGUMENT}
        )
        return response.status_code == 200 and response.json().get("result") == "hello"

    return call


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'mode':<12}{'conc':>5}{'calls':>7}{'errors':>7}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'calls/s':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.mode:<12}{row.concurrency:>5}{len(row.latencies_ms):>7}{row.errors:>7}"
            f"{row.percentile(50):>9.0f}{row.percentile(90):>9.0f}{row.percentile(99):>9.0f}"
            f"{row.throughput:>9.2f}"
        )
    by_key = {(row.mode, row.concurrency): row for row in rows}
    for (mode, concurrency), row in by_key.items():
        baseline = by_key.get(("docker run", concurrency))
        if mode != "docker run" and baseline is not None and baseline.latencies_ms:
            print(
                f"{mode} at concurrency {concurrency}: p50 {row.percentile(50):.0f} ms vs "
                f"docker run {baseline.percentile(50):.0f} ms "
                f"({row.percentile(50) / baseline.percentile(50):.2f}x), throughput "
                f"{row.throughput:.2f} vs {baseline.throughput:.2f} calls/s"
            )


async def main(calls: int, max_seconds: float, concurrencies: list[int]) -> None:
    image = busybox_image()
    client = docker.from_env(max_pool_size=max(concurrencies) * 2 + 4)
    rows: list[Row] = []
    with LocalStack() as stack:
        http, name = await platform_client(stack, image)
        try:
            await platform_call(http, name)()  # warm-up: catalog, stream, consumer
            for concurrency in concurrencies:
                rows.append(
                    await measure(
                        "platform", concurrency, calls, max_seconds, platform_call(http, name)
                    )
                )
        finally:
            await http.aclose()
    for concurrency in concurrencies:
        rows.append(
            await measure("docker run", concurrency, calls, max_seconds, docker_run_call(image))
        )
    for concurrency in concurrencies:
        rows.append(await measure("sdk", concurrency, calls, max_seconds, sdk_call(client, image)))
    client.close()
    print_table(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls per mode and concurrency")
    parser.add_argument("--max-seconds", type=float, default=120, help="time cap per row")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.max_seconds, args.concurrency))
