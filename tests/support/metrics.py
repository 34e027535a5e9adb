"""Reading the process's Prometheus metrics in tests: one sample, or a scrape of ``/metrics``.

The metrics are the process's (``faas_common.metrics``), shared by every app a test session
creates: tests compare a sample before and after what they do, never its absolute value.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def sample(name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sample's current value in this process (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0


def parse(text: str) -> list[Sample]:
    """Every sample of a ``/metrics`` answer (the text exposition format)."""
    return [item for family in text_string_to_metric_families(text) for item in family.samples]


def scraped(samples: list[Sample], name: str, **labels: str) -> list[Sample]:
    """The samples called ``name`` whose labels include ``labels``."""
    return [
        item
        for item in samples
        if item.name == name and all(item.labels.get(key) == value for key, value in labels.items())
    ]


async def scrape(url: str) -> list[Sample]:
    """``GET url`` (a ``/metrics`` endpoint), parsed."""
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        response = await client.get(url)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)
