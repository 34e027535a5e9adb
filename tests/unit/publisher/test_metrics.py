"""publisher-service's metrics: 429s by the limit reached, the activations it ends itself, and
its requests by route template, as its metrics port shows them."""

from __future__ import annotations

import httpx
import pytest

from faas_common.contract import FunctionSnapshot
from faas_common.metrics import serving_metrics
from publisher_service.service import QueueFull
from tests.support.keys import RsaKeys
from tests.support.metrics import sample, scrape, scraped
from tests.support.nats_server import free_port
from tests.unit.publisher.factories import (
    PUBLISH,
    FakeBackends,
    client_for,
    make_settings,
    publish_body,
    running_app,
)
from tests.unit.registry.factories import User


@pytest.mark.parametrize(
    ("description", "limit"),
    [
        ("maximum messages exceeded", "cluster"),
        ("maximum bytes exceeded", "cluster"),
        ("maximum messages per subject exceeded", "user"),
    ],
)
def test_a_full_stream_names_the_limit_reached(description: str, limit: str) -> None:
    assert QueueFull(description).limit == limit


@pytest.mark.parametrize("limit", ["cluster", "user"])
async def test_a_429_counts_its_limit_and_a_rejected_activation(
    client: httpx.AsyncClient,
    fakes: FakeBackends,
    alice: User,
    hello: FunctionSnapshot,
    limit: str,
) -> None:
    if limit == "cluster":
        fakes.queue.max_in_flight = 0
    else:
        fakes.queue.max_per_user = 0
    rejections = sample("faas_admission_rejections_total", {"limit": limit})
    rejected = sample(
        "faas_activations_total", {"outcome": "rejected", "cold": "false", "function": ""}
    )

    response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 429
    assert sample("faas_admission_rejections_total", {"limit": limit}) == rejections + 1
    assert (
        sample("faas_activations_total", {"outcome": "rejected", "cold": "false", "function": ""})
        == rejected + 1
    )


async def test_an_activation_nobody_started_in_time_counts_as_timed_out(
    rsa_keys: RsaKeys, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    settings = make_settings(
        rsa_keys.public_path,
        queue_timeout_seconds=0.3,
        reply_grace_seconds=0.2,
        result_poll_seconds=0.05,
    )
    fakes.queue.worker = None  # no spawner takes the job
    labels = {"outcome": "timed_out", "cold": "false", "function": ""}
    before = sample("faas_activations_total", labels)

    async with running_app(settings, fakes.backends()) as app, client_for(app) as client:
        response = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)

    assert response.status_code == 504
    assert sample("faas_activations_total", labels) == before + 1


async def test_the_metrics_port_shows_publishes_by_route_and_status(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, hello: FunctionSnapshot
) -> None:
    ok = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
    assert ok.status_code == 200, ok.text
    polled = await client.get(
        f"/publisher/executions/{ok.json()['execution_id']}", headers=alice.headers
    )
    assert polled.status_code == 200
    port = free_port()

    with serving_metrics("127.0.0.1", port):
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")

    assert scraped(
        samples,
        "faas_http_requests_total",
        service="publisher-service",
        route="/publisher/publish",
        method="POST",
        status="200",
    )
    assert scraped(
        samples,
        "faas_http_requests_total",
        route="/publisher/executions/{execution_id}",
        status="200",
    )
    assert not [item for item in samples if ok.json()["execution_id"] in str(item.labels)]
