"""Prometheus metrics of every service, in the process's default registry.

The metrics are module-level, created once per process: the local stack runs every service in
one process and serves them all on one ``/metrics``; each service in its own container serves
its own on ``METRICS_PORT`` (``serving_metrics``). Labels are kept few: never a user id or an
execution id, a function name only when the operator opts in (``METRICS_FUNCTION_LABELS``;
otherwise the ``function`` label is empty, which Prometheus treats as absent).

What each metric answers (see the README's "Metrics" section):

- ``faas_http_requests_total`` / ``faas_http_request_duration_seconds``: requests by service,
  route template, method and status (``faas_common.http_metrics``);
- ``faas_activations_total``: finished activations by ``outcome`` (``activation_outcome``) and
  ``cold`` (whether the call's container was created on its path);
- ``faas_activation_duration_seconds``: end to end, from the call to the final record;
- ``faas_activation_phase_seconds``: one histogram per ``phase``, a key of the record's
  ``timings`` (whatever keys appear there);
- ``faas_admission_rejections_total``: 429s of the publisher's admission, by ``limit``;
- ``faas_spawner_slots``, ``faas_executions_stream_jobs``, ``faas_publisher_functions_cached``:
  gauges read when scraped (``LiveGauge``) or refreshed periodically (the stream's jobs);
- ``faas_logins_total``: auth-service's logins by ``result``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faas_common.contract import ExecutionRecord

logger = logging.getLogger("faas.metrics")

SECONDS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""Histogram buckets: from a prewarmed hand-off (well under a millisecond) to a long function."""

HTTP_REQUESTS = Counter(
    "faas_http_requests",
    "HTTP requests answered, by service, route template, method and status.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "faas_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by service, route and method.",
    ["service", "route", "method"],
    buckets=SECONDS,
)
ACTIVATIONS = Counter(
    "faas_activations",
    "Finished activations, by outcome and whether the call's container was created on its path.",
    ["outcome", "cold", "function"],
)
ACTIVATION_DURATION = Histogram(
    "faas_activation_duration_seconds",
    "Activations from the call to their final record, by outcome.",
    ["outcome", "function"],
    buckets=SECONDS,
)
PHASE_DURATION = Histogram(
    "faas_activation_phase_seconds",
    "Time activations spent in each phase of their record's timings.",
    ["phase", "function"],
    buckets=SECONDS,
)
ADMISSION_REJECTIONS = Counter(
    "faas_admission_rejections",
    "Activations refused with 429 by the publisher's admission, by the limit reached.",
    ["limit"],
)
LOGINS = Counter("faas_logins", "Logins answered by auth-service, by result.", ["result"])
STREAM_JOBS = Gauge(
    "faas_executions_stream_jobs",
    "Jobs in the EXECUTIONS stream (queued or running), as of the last refresh.",
)


class LiveGauge(Collector):
    """A gauge read when scraped: the sum, per label values, of what each tracked source reports
    (the spawner's slots, the publisher's function cache: several live in one process in the
    local stack and in tests)."""

    def __init__(self, name: str, documentation: str, labels: Iterable[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._sources: list[Callable[[], Mapping[tuple[str, ...], float]]] = []
        self._lock = threading.Lock()
        REGISTRY.register(self)

    @contextlib.contextmanager
    def tracking(self, source: Callable[[], Mapping[tuple[str, ...], float]]) -> Iterator[None]:
        """Count ``source`` (label values → value) while the block runs."""
        with self._lock:
            self._sources.append(source)
        try:
            yield
        finally:
            with self._lock:
                self._sources.remove(source)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        totals: dict[tuple[str, ...], float] = {}
        with self._lock:
            sources = list(self._sources)
        for source in sources:
            for labels, value in source().items():
                totals[labels] = totals.get(labels, 0.0) + value
        for labels, value in sorted(totals.items()):
            family.add_metric(list(labels), value)
        yield family


SPAWNER_SLOTS = LiveGauge(
    "faas_spawner_slots",
    "Activation slots of the spawners in this process: state busy (running a job) or total.",
    ["state"],
)
FUNCTIONS_CACHED = LiveGauge(
    "faas_publisher_functions_cached",
    "Functions held in the publisher's in-memory read model of the registry.",
)


def activation_outcome(record: ExecutionRecord) -> str:
    """``succeeded``; ``rejected`` for a 429 (``concurrency_limit``); else the record's error
    code (``function_failed``, ``timed_out``, ``output_too_large``, ``image_unavailable``,
    ``runtime_unavailable``, ``storage_full``)."""
    if record.error is None:
        return record.status
    return "rejected" if record.error == "concurrency_limit" else record.error


def is_cold(record: ExecutionRecord) -> bool:
    """Whether the call's container was created on its path (its timings have ``create``); a
    call served by a prewarmed container, or that never got one, is not cold."""
    return "create" in record.timings


class ActivationMetrics:
    """Counts finished activations; ``function_labels`` (``METRICS_FUNCTION_LABELS``) adds the
    function's name to their labels."""

    def __init__(self, *, function_labels: bool = False) -> None:
        self.function_labels = function_labels

    def function(self, name: str) -> str:
        return name if self.function_labels else ""

    def finished(self, record: ExecutionRecord) -> None:
        """One final record: its outcome, end-to-end time and each phase of its timings."""
        function = self.function(record.function)
        outcome = activation_outcome(record)
        cold = "true" if is_cold(record) else "false"
        ACTIVATIONS.labels(outcome=outcome, cold=cold, function=function).inc()
        if record.finished_at is not None and record.status != "rejected":
            elapsed = max(record.finished_at - record.created_at, 0.0)
            ACTIVATION_DURATION.labels(outcome=outcome, function=function).observe(elapsed)
        for phase, milliseconds in record.timings.items():
            PHASE_DURATION.labels(phase=phase, function=function).observe(milliseconds / 1000)

    def rejected(self, limit: str, function: str) -> None:
        """A 429 of the admission (``limit``: ``cluster`` or ``user``)."""
        ADMISSION_REJECTIONS.labels(limit=limit).inc()
        ACTIVATIONS.labels(outcome="rejected", cold="false", function=self.function(function)).inc()


@contextlib.asynccontextmanager
async def refreshing(
    gauge: Gauge, read: Callable[[], Awaitable[float]], *, interval: float, read_seconds: float
) -> AsyncIterator[None]:
    """``gauge`` set from ``read()`` at once and then every ``interval`` seconds while the block
    runs; each read is bounded by ``read_seconds``, and one that fails leaves the last value."""
    stopping = asyncio.Event()

    async def refresh_forever() -> None:
        while not stopping.is_set():
            try:
                async with asyncio.timeout(read_seconds):
                    gauge.set(await read())
            except Exception as exc:  # a metric never stops the service
                logger.debug("metric refresh failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)

    task = asyncio.create_task(refresh_forever(), name="metrics-refresh")
    try:
        yield
    finally:
        # The event too: a client library may turn the cancellation of a read into an error of
        # its own, which the loop swallows; the loop then sees the event and ends.
        stopping.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def serving_metrics(host: str, port: int) -> Iterator[int | None]:
    """``/metrics`` of this process on ``host:port`` (a thread of its own) while the block runs;
    yields the port it listens on (``port`` 0: no server, None)."""
    if port == 0:
        yield None
        return
    server: WSGIServer
    server, thread = start_http_server(port, addr=host)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
