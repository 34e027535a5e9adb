"""``python -m <service>`` serves the process's Prometheus metrics on its own port beside the
API (``METRICS_PORT``, or the service's ``<PREFIX>METRICS_PORT``): the spawner, which has no
HTTP API, and the publisher, each as an OS process of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.samples import Sample

from tests.support.keys import RsaKeys
from tests.support.metrics import parse, scraped
from tests.support.nats_server import free_port
from tests.support.processes import ServiceProcess

SLOTS = 3


@contextmanager
def started(process: ServiceProcess) -> Iterator[ServiceProcess]:
    process.start()
    try:
        process.wait_ready(timeout=60)
        yield process
    finally:
        process.stop()


def scrape(port: int) -> list[Sample]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200
    return parse(response.text)


def refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5, trust_env=False)
    except httpx.ConnectError:
        return True
    return False


def test_the_spawner_serves_its_slots_on_its_metrics_port(nats_url: str, tmp_path: Path) -> None:
    port = free_port()
    spawner = ServiceProcess(
        name="spawner",
        module="spawner_service",
        env={
            "NATS_URL": nats_url,
            "NATS_CONNECT_TIMEOUT": "10",
            "SPAWNER_METRICS_PORT": str(port),
            "METRICS_HOST": "127.0.0.1",
            "SPAWNER_MAX_CONTAINERS": str(SLOTS),
            "SPAWNER_POOL_MAX_PARKED": "0",
            "SPAWNER_INSTANCE_ID": f"metrics-{uuid.uuid4().hex[:8]}",
        },
        directory=tmp_path,
        health_url=f"http://127.0.0.1:{port}/metrics",
    )
    with started(spawner):
        samples = scrape(port)
        assert [item.value for item in scraped(samples, "faas_spawner_slots", state="total")] == [
            SLOTS
        ]
        assert scraped(samples, "faas_spawner_slots", state="busy")
        assert scraped(samples, "python_info")

    assert spawner.process is not None
    assert spawner.process.returncode == 0
    assert refused(port)


def test_the_publisher_serves_its_requests_on_its_metrics_port(
    nats_url: str, rsa_keys: RsaKeys, tmp_path: Path
) -> None:
    api, metrics = free_port(), free_port()
    publisher = ServiceProcess(
        name="publisher",
        module="publisher_service",
        env={
            "NATS_URL": nats_url,
            "NATS_CONNECT_TIMEOUT": "10",
            "ENVIRONMENT": "local",
            "JWT_PUBLIC_KEY_FILE": str(rsa_keys.public_path),
            "PUBLISHER_HOST": "127.0.0.1",
            "PUBLISHER_PORT": str(api),
            "METRICS_PORT": str(metrics),
            "METRICS_HOST": "127.0.0.1",
            "PUBLISHER_INSTANCE_ID": f"metrics-{uuid.uuid4().hex[:8]}",
        },
        directory=tmp_path,
        health_url=f"http://127.0.0.1:{api}/publisher/health",
    )
    with started(publisher):
        assert httpx.get(f"http://127.0.0.1:{api}/publisher/ready", trust_env=False).is_success
        no_metrics_here = httpx.get(f"http://127.0.0.1:{api}/metrics", trust_env=False)
        samples = scrape(metrics)

    assert no_metrics_here.status_code == 404
    ready = scraped(
        samples,
        "faas_http_requests_total",
        service="publisher-service",
        route="/publisher/ready",
        method="GET",
        status="200",
    )
    assert [item.value for item in ready] == [1]
    assert scraped(samples, "faas_executions_stream_jobs")
    assert scraped(samples, "faas_publisher_functions_cached")
    assert refused(metrics)
