"""The spawner's activation metrics: each final record it writes is counted once, by outcome
and coldness, with its end-to-end time and each phase of its timings; what a scrape shows."""

from __future__ import annotations

import time
from typing import Any

from faas_common.contract import Job
from faas_common.metrics import serving_metrics
from spawner_service.handler import JobHandler
from spawner_service.runtime.base import RunResult
from tests.support.metrics import sample, scrape, scraped
from tests.support.nats_server import free_port
from tests.unit.spawner.fakes import (
    FakeMsg,
    FakeRuntime,
    FakeStore,
    Replies,
    make_job,
    make_settings,
    queued_record,
)

WARM = {"pool": 0.4, "run": 12.0, "remove": 3.0}
COLD = {"pull": 1.0, "create": 14.0, "start": 190.0, "run": 12.0, "remove": 6.0}


async def handle(result: RunResult, job: Job | None = None, **settings: Any) -> Job:
    """One job through a handler over fakes; the job (queued first) is returned."""
    job = job or make_job()
    runtime = FakeRuntime(result)
    store = FakeStore()
    runtime.store = store
    handler = JobHandler(make_settings(**settings), runtime=runtime, store=store, publish=Replies())
    store.seed(job.user_id, queued_record(job))
    await handler.handle(FakeMsg(job.model_dump_json().encode()))
    return job


def activations(outcome: str, cold: str, function: str = "") -> float:
    return sample(
        "faas_activations_total", {"outcome": outcome, "cold": cold, "function": function}
    )


def phase_count(phase: str, function: str = "") -> float:
    return sample("faas_activation_phase_seconds_count", {"phase": phase, "function": function})


async def test_a_finished_job_counts_its_outcome_and_every_phase_of_its_record() -> None:
    before = activations("succeeded", "false")
    phases = {name: phase_count(name) for name in ("queue", "pool", "run", "remove", "create")}
    ended = sample(
        "faas_activation_duration_seconds_count", {"outcome": "succeeded", "function": ""}
    )

    await handle(RunResult("succeeded", exit_code=0, stdout=b"ok\n", timings=WARM, started=True))

    assert activations("succeeded", "false") == before + 1
    for name in ("queue", "pool", "run", "remove"):
        assert phase_count(name) == phases[name] + 1, name
    assert phase_count("create") == phases["create"]
    assert (
        sample("faas_activation_duration_seconds_count", {"outcome": "succeeded", "function": ""})
        == ended + 1
    )


async def test_a_job_whose_container_was_created_for_it_is_cold() -> None:
    before = activations("function_failed", "true")

    await handle(RunResult("function_failed", exit_code=3, timings=COLD, started=True))

    assert activations("function_failed", "true") == before + 1


async def test_an_async_job_is_counted_though_nobody_waits_for_its_reply() -> None:
    before = activations("timed_out", "true")

    await handle(RunResult("timed_out", timings=COLD, started=True), make_job(reply_subject=None))

    assert activations("timed_out", "true") == before + 1


async def test_a_job_past_its_start_deadline_counts_as_timed_out() -> None:
    before = activations("timed_out", "false")

    await handle(RunResult("succeeded"), make_job(start_deadline=time.time() - 1))

    assert activations("timed_out", "false") == before + 1


async def test_function_names_label_the_metrics_only_when_the_operator_opts_in() -> None:
    labelled = activations("image_unavailable", "false", "hello")
    unlabelled = activations("image_unavailable", "false")

    await handle(RunResult("image_unavailable"), metrics_function_labels=True)

    assert activations("image_unavailable", "false", "hello") == labelled + 1
    assert activations("image_unavailable", "false") == unlabelled


async def test_the_metrics_port_shows_the_activations_and_their_phases() -> None:
    await handle(RunResult("succeeded", exit_code=0, stdout=b"ok\n", timings=WARM, started=True))
    port = free_port()

    with serving_metrics("127.0.0.1", port):
        samples = await scrape(f"http://127.0.0.1:{port}/metrics")

    assert scraped(samples, "faas_activations_total", outcome="succeeded")
    buckets = scraped(samples, "faas_activation_phase_seconds_bucket", phase="pool")
    assert buckets
    assert max(item.value for item in buckets) >= 1
    assert scraped(samples, "faas_activation_duration_seconds_count", outcome="succeeded")
