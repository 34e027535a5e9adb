"""auth-service's metrics: logins by result, and its requests by route template, as its
metrics port shows them."""

from __future__ import annotations

import httpx

from faas_common.metrics import serving_metrics
from tests.support.metrics import sample, scrape, scraped
from tests.support.nats_server import free_port
from tests.unit.auth.factories import RegisteredUser, login


async def test_logins_are_counted_by_result(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    succeeded = sample("faas_logins_total", {"result": "succeeded"})
    refused = sample("faas_logins_total", {"result": "invalid_credentials"})

    await login(client, user.username, user.password)
    wrong = await client.post(
        "/auth/login", json={"username": user.username, "password": "not-the-password"}
    )

    assert wrong.status_code == 401
    assert sample("faas_logins_total", {"result": "succeeded"}) == succeeded + 1
    assert sample("faas_logins_total", {"result": "invalid_credentials"}) == refused + 1


async def test_the_metrics_port_shows_logins_and_requests_by_route(
    client: httpx.AsyncClient, user: RegisteredUser
) -> None:
    await login(client, user.username, user.password)
    port = free_port()

    with serving_metrics("127.0.0.1", port):
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")

    assert scraped(samples, "faas_logins_total", result="succeeded")
    ok = scraped(
        samples,
        "faas_http_requests_total",
        service="auth-service",
        route="/auth/login",
        method="POST",
        status="200",
    )
    assert ok
    assert ok[0].value >= 1
    assert scraped(samples, "faas_http_requests_total", route="/auth/register", status="201")
    assert not [item for item in samples if user.username in str(item.labels)]
