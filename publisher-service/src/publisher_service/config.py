"""publisher-service settings: the shared ones plus ``PUBLISHER_*``."""

from __future__ import annotations

import secrets

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from faas_common.settings import CommonSettings

MAX_HISTORY_LIMIT = 100
"""The most records ``GET /publisher/executions`` returns, whatever ``limit`` asks for."""

ARGV_ELEMENT_LIMIT = 131_071
"""One argv element is at most this many bytes (the kernel's MAX_ARG_STRLEN minus the NUL)."""


def _instance_id() -> str:
    return secrets.token_hex(8)


class PublisherSettings(CommonSettings):
    model_config = SettingsConfigDict(
        env_prefix="PUBLISHER_", extra="ignore", populate_by_name=True
    )

    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
    max_argument_bytes: int = Field(
        ARGV_ELEMENT_LIMIT,
        ge=1,
        le=ARGV_ELEMENT_LIMIT,
        description="Largest argument (UTF-8 bytes); larger ones are a 413 before anything is "
        "queued. It becomes one argv element, so it cannot exceed the kernel's limit.",
    )
    queue_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a sync activation may wait for a worker before it is dropped "
        "(the job's start deadline).",
    )
    async_queue_timeout_seconds: float = Field(
        300.0, gt=0, description="The same for async activations."
    )
    reply_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="Extra wait for a sync result beyond the start deadline plus the "
        "function's timeout.",
    )
    result_poll_seconds: float = Field(
        2.0,
        gt=0,
        description="While a sync call waits for its reply, how often it also reads the record "
        "(covers a lost reply and a retried call answered by another instance).",
    )
    instance_id: str = Field(
        default_factory=_instance_id,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="This instance's reply subject token: faas.reply.<instance_id>.*",
    )
    history_limit: int = Field(
        20,
        ge=1,
        le=MAX_HISTORY_LIMIT,
        description="Records GET /publisher/executions returns when no limit is given.",
    )
    nats_timeout: float = Field(
        5.0, gt=0, description="Seconds one JetStream request (publish, KV read or write) may take."
    )
    publish_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="Attempts to queue a job when JetStream times out or has no responders "
        "(safe: the execution id is the Nats-Msg-Id, so a retry never enqueues twice).",
    )
