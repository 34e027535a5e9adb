"""registry-service's requests by route template, as its metrics port shows them."""

from __future__ import annotations

import httpx

from faas_common.metrics import serving_metrics
from tests.support.metrics import sample, scrape, scraped
from tests.support.nats_server import free_port
from tests.unit.registry.factories import User, function_body

SERVICE = "registry-service"


async def test_requests_are_labelled_with_the_route_template_never_the_name(
    client: httpx.AsyncClient, alice: User
) -> None:
    found = {"service": SERVICE, "route": "/registry/functions/{name}", "method": "GET"}
    before_found = sample("faas_http_requests_total", {**found, "status": "200"})
    before_missing = sample("faas_http_requests_total", {**found, "status": "404"})

    created = await client.post(
        "/registry/functions", json=function_body("metered"), headers=alice.headers
    )
    assert created.status_code == 201, created.text
    assert (await client.get("/registry/functions/metered", headers=alice.headers)).is_success
    missing = await client.get("/registry/functions/no-such-fn", headers=alice.headers)
    assert missing.status_code == 404
    port = free_port()
    with serving_metrics("127.0.0.1", port):
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")

    assert sample("faas_http_requests_total", {**found, "status": "200"}) == before_found + 1
    assert sample("faas_http_requests_total", {**found, "status": "404"}) == before_missing + 1
    assert scraped(
        samples, "faas_http_requests_total", service=SERVICE, route="/registry/functions"
    )
    assert scraped(samples, "faas_http_request_duration_seconds_bucket", service=SERVICE)
    routes = {item.labels.get("route", "") for item in samples}
    assert not {route for route in routes if "metered" in route or "no-such-fn" in route}
