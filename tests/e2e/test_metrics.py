"""End to end: the local stack's ``GET /metrics`` (one for its whole process) after a few calls
through ``./bin/run.sh``, with the real Docker engine: activations by outcome and coldness,
one histogram per phase of the records' timings, HTTP requests by route template, the
spawner's slots, the stream's jobs, the function cache and the logins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.samples import Sample

from tests.e2e.stack import Stack, User, register, running_stack
from tests.support.images import busybox_image
from tests.support.metrics import parse, scraped

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

MAX_CONTAINERS = 2
CALLS = 4
HTTP_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    instance = f"e2e-metrics-{uuid.uuid4().hex[:8]}"
    with running_stack(
        tmp_path_factory.mktemp("metrics"),
        SPAWNER_INSTANCE_ID=instance,
        SPAWNER_MAX_CONTAINERS=str(MAX_CONTAINERS),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def calls(stack: Stack) -> Iterator[tuple[User, list[dict[str, Any]]]]:
    """Alice's records of ``CALLS`` succeeded calls and one failed one (one more call names no
    function at all)."""
    with httpx.Client(base_url=stack.url, timeout=HTTP_TIMEOUT) as client:
        alice = register(client, "alice", "wonderland-42")
        alice.create_function("sh", busybox_image(), timeout_seconds=30, memory_mb=64)
        records = []
        for number in range(CALLS):
            response = alice.post(
                "/publisher/publish", json={"name": "sh", "argument": f"echo call {number}"}
            )
            assert response.status_code == 200, response.text
            records.append(response.json())
        failed = alice.post("/publisher/publish", json={"name": "sh", "argument": "exit 3"})
        assert failed.status_code == 502, failed.text
        records.append(failed.json())
        missing = alice.post("/publisher/publish", json={"name": "nothing", "argument": "x"})
        assert missing.status_code == 404
        yield alice, records


@pytest.fixture(scope="module")
def samples(stack: Stack, calls: tuple[User, list[dict[str, Any]]]) -> list[Sample]:
    response = httpx.get(f"{stack.url}/metrics", timeout=HTTP_TIMEOUT, trust_env=False)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(item.value for item in scraped(samples, name, **labels))


def execution_record(record: dict[str, Any]) -> dict[str, Any]:
    """The record itself: the sync answer's body, or the ``execution`` of an error's body."""
    return record.get("execution") or record


def test_activations_are_counted_by_outcome_and_coldness(
    samples: list[Sample], calls: tuple[User, list[dict[str, Any]]]
) -> None:
    records = [execution_record(record) for record in calls[1]]
    assert total(samples, "faas_activations_total", outcome="succeeded") == CALLS
    assert total(samples, "faas_activations_total", outcome="function_failed") == 1
    cold = sum(1 for record in records if "create" in record["timings"])
    assert total(samples, "faas_activations_total", cold="true") == cold
    assert total(samples, "faas_activations_total", cold="false") == len(records) - cold
    ended = total(samples, "faas_activation_duration_seconds_count")
    assert ended == len(records)
    assert 0 < total(samples, "faas_activation_duration_seconds_sum") < 60 * ended


def test_each_phase_of_the_records_has_its_histogram(
    samples: list[Sample], calls: tuple[User, list[dict[str, Any]]]
) -> None:
    records = [execution_record(record) for record in calls[1]]
    phases = {phase for record in records for phase in record["timings"]}
    assert {"queue", "run"} <= phases
    for phase in phases:
        having = [record["timings"][phase] for record in records if phase in record["timings"]]
        count = total(samples, "faas_activation_phase_seconds_count", phase=phase)
        assert count == len(having), phase
        seconds = total(samples, "faas_activation_phase_seconds_sum", phase=phase)
        assert seconds == pytest.approx(sum(having) / 1000, rel=1e-3, abs=1e-6), phase
        buckets = scraped(samples, "faas_activation_phase_seconds_bucket", phase=phase)
        assert max(item.value for item in buckets if item.labels["le"] == "+Inf") == count


def test_http_requests_are_counted_by_service_route_template_and_status(
    samples: list[Sample], calls: tuple[User, list[dict[str, Any]]]
) -> None:
    publish = {"service": "publisher-service", "route": "/publisher/publish", "method": "POST"}
    assert total(samples, "faas_http_requests_total", **publish, status="200") == CALLS
    assert total(samples, "faas_http_requests_total", **publish, status="502") == 1
    assert total(samples, "faas_http_requests_total", **publish, status="404") == 1
    created = total(
        samples,
        "faas_http_requests_total",
        service="registry-service",
        route="/registry/functions",
        method="POST",
        status="201",
    )
    assert created == 1
    timed = total(samples, "faas_http_request_duration_seconds_count", **publish)
    assert timed == CALLS + 2
    routes = {item.labels.get("route", "") for item in samples}
    assert not {route for route in routes if "sh" in route.split("/") or "nothing" in route}


def test_the_gauges_and_logins(
    samples: list[Sample], calls: tuple[User, list[dict[str, Any]]]
) -> None:
    assert total(samples, "faas_spawner_slots", state="total") == MAX_CONTAINERS
    assert 0 <= total(samples, "faas_spawner_slots", state="busy") <= MAX_CONTAINERS
    assert total(samples, "faas_publisher_functions_cached") == 1
    assert scraped(samples, "faas_executions_stream_jobs")
    assert total(samples, "faas_logins_total", result="succeeded") == 1
    assert not [item for item in samples if calls[0].username in str(item.labels)]


def test_the_metrics_are_the_processes_own(samples: list[Sample]) -> None:
    # One /metrics for the whole process: the interpreter's own collectors come with it.
    assert scraped(samples, "python_info")
