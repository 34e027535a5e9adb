"""``python -m spawner_service``: consume activations until SIGTERM or SIGINT.

Start-up: settings from the environment, JSON logs, Prometheus ``/metrics`` on
``METRICS_PORT`` (``SPAWNER_METRICS_PORT``, default 9104; 0: none), NATS connected (unreachable for
``NATS_CONNECT_TIMEOUT`` seconds is an exit with status 1). A Docker engine that does not answer
is a warning, not an exit: the engine may come up later, and meanwhile this spawner fetches no
jobs (healthy spawners run them).

SIGTERM or SIGINT: stop fetching, finish the jobs held, drain NATS, exit 0. A second signal does
not cut the held jobs short; the orchestrator's kill timeout is the hard stop (their containers
are then removed by the stale-container sweep of any spawner).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from faas_common.logging import configure_logging
from faas_common.metrics import serving_metrics
from faas_common.nats import NatsUnavailable
from spawner_service.app import running_worker
from spawner_service.config import SpawnerSettings
from spawner_service.worker import Worker

logger = logging.getLogger("spawner.main")


async def serve(settings: SpawnerSettings) -> int:
    """Consume (``consume``) with this process's ``/metrics`` served on ``METRICS_PORT``."""
    with serving_metrics(settings.metrics_host, settings.metrics_port):
        return await consume(settings)


async def consume(settings: SpawnerSettings) -> int:
    try:
        async with running_worker(settings) as running:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, _stopper(running.worker, sig))
            await asyncio.wait([running.task])
            failure = None if running.task.cancelled() else running.task.exception()
            if failure is not None:
                raise failure
    except NatsUnavailable as exc:
        logger.error("%s", exc)
        return 1
    return 0


def _stopper(worker: Worker, sig: signal.Signals) -> Callable[[], None]:
    def stop() -> None:
        logger.info(
            "stopping: no new jobs, finishing held ones",
            extra={"signal": sig.name, "jobs": worker.running_jobs},
        )
        worker.stop()

    return stop


def main() -> None:
    settings = SpawnerSettings()
    configure_logging("spawner-service", settings.log_level, settings.log_format)
    sys.exit(asyncio.run(serve(settings)))


if __name__ == "__main__":
    main()
