"""spawner-service settings: the shared ones plus ``SPAWNER_*``."""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from faas_common.settings import CommonSettings

NATS_MAX_PAYLOAD = 1_048_576
"""NATS's default ``max_payload``: the largest message, so the largest execution record."""
RECORD_ROOM = 65_536
"""Room the record's other fields (and escapes in ordinary text) need beside stdout and logs."""


def default_instance_id() -> str:
    """``<hostname>-<pid>``: unique per process, readable in logs and container names."""
    return f"{socket.gethostname()}-{os.getpid()}"


class SpawnerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="SPAWNER_", extra="ignore", populate_by_name=True)

    max_containers: int = Field(4, ge=1, le=256)
    """Activations this spawner runs at once; it never holds more jobs than this."""
    output_limit_bytes: int = Field(524_288, ge=1)
    """Largest stdout a function may write; more is ``output_too_large`` (never a cut result).
    With the log tail it must leave room under NATS's 1 MiB ``max_payload``: the result travels
    as JSON in the execution record."""
    log_tail_bytes: int = Field(8_192, ge=0)
    """How much of the end of stderr is kept as the execution's ``logs``."""
    pids_limit: int = Field(64, ge=8)
    cpus: float = Field(1.0, gt=0)
    tmpfs_mb: int = Field(64, ge=1)
    """Size of the writable ``/tmp`` (the root filesystem is read-only)."""
    ack_wait_seconds: float = Field(30.0, gt=0)
    heartbeat_seconds: float = Field(10.0, gt=0)
    """How often a running job tells JetStream it is still in progress (below ack_wait / 2)."""
    max_deliver: int = Field(3, ge=1)
    retry_delay_seconds: float = Field(2.0, ge=0)
    """Delay before a job that failed for a transient reason (NATS KV, Docker) is redelivered."""
    stale_after_seconds: float = Field(60.0, ge=0)
    """Grace past a container's deadline label before any spawner removes it."""
    reap_interval_seconds: float = Field(30.0, gt=0)
    pull_timeout_seconds: float = Field(300.0, gt=0)
    """How long activations wait for an image pull before failing with ``image_unavailable``."""
    allow_network: bool = False
    """Operator opt-in: give function containers the ``network`` below instead of none."""
    network: str = "bridge"
    instance_id: str = Field(default_factory=default_instance_id)
    engine_check_seconds: float = Field(1.0, gt=0)
    """How often the Docker engine is pinged (before fetching; while it is down, until it
    answers again: a spawner without an engine fetches no jobs)."""
    fetch_timeout: float = Field(1.0, gt=0)
    """Seconds one fetch waits for jobs; also bounds how long a stop waits for the fetch."""

    @model_validator(mode="after")
    def _check_limits(self) -> SpawnerSettings:
        room = NATS_MAX_PAYLOAD - RECORD_ROOM
        if self.output_limit_bytes + self.log_tail_bytes > room:
            raise ValueError(
                f"SPAWNER_OUTPUT_LIMIT_BYTES ({self.output_limit_bytes}) + SPAWNER_LOG_TAIL_BYTES "
                f"({self.log_tail_bytes}) must be at most {room}: the execution record carries "
                f"both and must fit a NATS message ({NATS_MAX_PAYLOAD} bytes)"
            )
        if self.heartbeat_seconds >= self.ack_wait_seconds / 2:
            raise ValueError(
                f"SPAWNER_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be below half of "
                f"SPAWNER_ACK_WAIT_SECONDS ({self.ack_wait_seconds:g}): one late heartbeat must "
                "not let JetStream redeliver a job that is still running"
            )
        return self
