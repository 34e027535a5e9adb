"""faas_common.metrics and the HTTP middleware: the labels a scrape shows, the activation
metrics of a final record, the gauges read when scraped, the metrics port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import REGISTRY, Gauge

from faas_common.contract import ExecutionRecord
from faas_common.errors import NotFound
from faas_common.http import create_service_app
from faas_common.metrics import (
    ActivationMetrics,
    LiveGauge,
    activation_outcome,
    refreshing,
    serving_metrics,
)
from tests.support.metrics import sample, scrape
from tests.support.nats_server import free_port

SERVICE = "metrics-test"
router = APIRouter(prefix="/svc")


@router.get("/items/{item_id}")
async def item(item_id: str) -> dict[str, str]:
    if item_id == "missing":
        raise NotFound("no such item")
    return {"id": item_id}


@router.post("/items")
async def create_item(body: dict[str, Any]) -> dict[str, Any]:
    return body


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_service_app(
        title=SERVICE, prefix="/svc", lifespan=no_lifespan, routers=[router], max_body_bytes=1024
    )


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def requests(route: str, method: str, status: int) -> float:
    labels = {"service": SERVICE, "route": route, "method": method, "status": str(status)}
    return sample("faas_http_requests_total", labels)


def routes_labelled() -> set[str]:
    return {
        item.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "faas_http_requests"
        for item in family.samples
        if item.labels.get("service") == SERVICE
    }


@pytest.mark.parametrize(
    ("method", "path", "route", "status"),
    [
        ("GET", "/svc/items/42", "/svc/items/{item_id}", 200),
        ("GET", "/svc/items/missing", "/svc/items/{item_id}", 404),
        ("DELETE", "/svc/items/42", "/svc/items/{item_id}", 405),
        ("POST", "/svc/items", "/svc/items", 200),
        ("GET", "/svc/nowhere/7", "unmatched", 404),
    ],
)
async def test_requests_are_counted_by_route_template_method_and_status(
    client: httpx.AsyncClient, method: str, path: str, route: str, status: int
) -> None:
    before = requests(route, method, status)
    timed = sample(
        "faas_http_request_duration_seconds_count",
        {"service": SERVICE, "route": route, "method": method},
    )

    response = await client.request(method, path, json={"a": 1} if method == "POST" else None)

    assert response.status_code == status
    assert requests(route, method, status) == before + 1
    assert (
        sample(
            "faas_http_request_duration_seconds_count",
            {"service": SERVICE, "route": route, "method": method},
        )
        == timed + 1
    )
    assert not {label for label in routes_labelled() if "42" in label or "nowhere" in label}


async def test_a_body_refused_before_any_route_is_counted_as_unmatched(
    client: httpx.AsyncClient,
) -> None:
    before = requests("unmatched", "POST", 413)

    response = await client.post("/svc/items", content=b"x" * 2048)

    assert response.status_code == 413
    assert requests("unmatched", "POST", 413) == before + 1


async def test_unknown_methods_share_one_label(client: httpx.AsyncClient) -> None:
    before = requests("/svc/items/{item_id}", "other", 405)

    response = await client.request("BREW", "/svc/items/42")

    assert response.status_code == 405
    assert requests("/svc/items/{item_id}", "other", 405) == before + 1


def record(**overrides: Any) -> ExecutionRecord:
    fields: dict[str, Any] = {
        "execution_id": "e1",
        "function": "hello",
        "status": "succeeded",
        "created_at": 1000.0,
        "finished_at": 1000.5,
        "timings": {"queue": 2.0, "pool": 0.4, "run": 30.0},
    }
    return ExecutionRecord(**{**fields, **overrides})


def activations(outcome: str, cold: str, function: str = "") -> float:
    labels = {"outcome": outcome, "cold": cold, "function": function}
    return sample("faas_activations_total", labels)


def phase(name: str, suffix: str = "count", function: str = "") -> float:
    labels = {"phase": name, "function": function}
    return sample(f"faas_activation_phase_seconds_{suffix}", labels)


def test_a_final_record_counts_its_outcome_end_to_end_time_and_every_phase_it_has() -> None:
    before = activations("succeeded", "false")
    pool_count, pool_sum, run_count = phase("pool"), phase("pool", "sum"), phase("run")
    create_count = phase("create")
    ended = sample("faas_activation_duration_seconds_sum", {"outcome": "succeeded", "function": ""})

    ActivationMetrics().finished(record())

    assert activations("succeeded", "false") == before + 1
    assert phase("pool") == pool_count + 1  # a phase no list names: whatever the timings hold
    assert phase("pool", "sum") == pytest.approx(pool_sum + 0.0004)
    assert phase("run") == run_count + 1
    assert phase("create") == create_count  # absent from the timings: not observed
    assert sample(
        "faas_activation_duration_seconds_sum", {"outcome": "succeeded", "function": ""}
    ) == pytest.approx(ended + 0.5)


def test_a_call_whose_container_was_created_on_its_path_is_cold() -> None:
    before = activations("function_failed", "true")

    ActivationMetrics().finished(
        record(status="failed", error="function_failed", timings={"create": 12.0, "start": 90.0})
    )

    assert activations("function_failed", "true") == before + 1


def test_function_names_are_labels_only_when_the_operator_opts_in() -> None:
    labelled = activations("timed_out", "false", "hello")
    unlabelled = activations("timed_out", "false")
    timed_out = record(status="timed_out", error="timed_out")

    ActivationMetrics(function_labels=True).finished(timed_out)
    ActivationMetrics().finished(timed_out)

    assert activations("timed_out", "false", "hello") == labelled + 1
    assert activations("timed_out", "false") == unlabelled + 1


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        ("succeeded", None, "succeeded"),
        ("failed", "function_failed", "function_failed"),
        ("failed", "image_unavailable", "image_unavailable"),
        ("failed", "storage_full", "storage_full"),
        ("timed_out", "timed_out", "timed_out"),
        ("rejected", "concurrency_limit", "rejected"),
        ("rejected", "runtime_unavailable", "runtime_unavailable"),
    ],
)
def test_outcomes_are_the_status_or_the_error_code(
    status: str, error: str | None, outcome: str
) -> None:
    assert activation_outcome(record(status=status, error=error)) == outcome


def test_a_rejection_counts_its_limit_and_a_rejected_activation() -> None:
    limit = sample("faas_admission_rejections_total", {"limit": "user"})
    rejected = activations("rejected", "false")

    ActivationMetrics().rejected("user", "hello")

    assert sample("faas_admission_rejections_total", {"limit": "user"}) == limit + 1
    assert activations("rejected", "false") == rejected + 1


def test_a_live_gauge_sums_the_sources_it_tracks_while_they_live() -> None:
    gauge = LiveGauge("faas_test_live_slots", "Test slots.", ["state"])
    try:
        with gauge.tracking(lambda: {("busy",): 1, ("total",): 4}):
            with gauge.tracking(lambda: {("busy",): 2, ("total",): 4}):
                assert sample("faas_test_live_slots", {"state": "busy"}) == 3
                assert sample("faas_test_live_slots", {"state": "total"}) == 8
            assert sample("faas_test_live_slots", {"state": "busy"}) == 1
        assert REGISTRY.get_sample_value("faas_test_live_slots", {"state": "busy"}) is None
    finally:
        REGISTRY.unregister(gauge)


async def test_a_refreshed_gauge_keeps_its_last_value_when_a_read_fails() -> None:
    gauge = Gauge("faas_test_refreshed", "Test gauge.", registry=None)
    reads: list[int] = []
    failed = asyncio.Event()

    async def read() -> float:
        reads.append(1)
        if len(reads) > 1:
            failed.set()
            raise RuntimeError("the stream does not answer")
        return 7.0

    async with refreshing(gauge, read, interval=0.01, read_seconds=1.0):
        await asyncio.wait_for(failed.wait(), timeout=30)
        assert [item.value for family in gauge.collect() for item in family.samples] == [7.0]


async def test_a_refresh_stops_even_when_the_read_swallows_its_cancellation() -> None:
    gauge = Gauge("faas_test_refreshed_stubborn", "Test gauge.", registry=None)
    reading = asyncio.Event()

    async def read() -> float:
        reading.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("the request was cancelled") from None  # as client libraries do
        return 1.0

    async def refresh_until_read() -> None:
        async with refreshing(gauge, read, interval=0.01, read_seconds=3600):
            await reading.wait()

    await asyncio.wait_for(refresh_until_read(), timeout=30)


async def test_the_metrics_port_serves_the_process_metrics_until_the_block_ends(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/svc/items/1")
    ActivationMetrics().finished(record())
    port = free_port()

    with serving_metrics("127.0.0.1", port) as listening:
        assert listening == port
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")

    names = {item.name for item in samples}
    assert {"faas_http_requests_total", "faas_activations_total"} <= names
    with pytest.raises(httpx.ConnectError):
        await scrape(f"http://127.0.0.1:{port}/metrics")


def test_port_zero_serves_nothing() -> None:
    with serving_metrics("127.0.0.1", 0) as listening:
        assert listening is None
