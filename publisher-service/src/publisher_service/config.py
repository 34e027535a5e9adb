"""publisher-service settings: the shared ones plus ``PUBLISHER_*``."""

from __future__ import annotations

import secrets

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from faas_common.contract import DUPLICATE_WINDOW_SECONDS, ID_PATTERN
from faas_common.settings import CommonSettings, ImageSettings, metrics_port_field

MAX_HISTORY_LIMIT = 100
"""The most records ``GET /publisher/executions`` returns, whatever ``limit`` asks for."""

MAX_WAIT_SECONDS = 60
"""The longest ``GET /publisher/executions/{id}?wait=`` a client may ask for."""

ARGV_ELEMENT_LIMIT = 131_071
"""One argv element is at most this many bytes (the kernel's MAX_ARG_STRLEN minus the NUL)."""


def _instance_id() -> str:
    return secrets.token_hex(8)


class PublisherSettings(CommonSettings, ImageSettings):
    model_config = SettingsConfigDict(
        env_prefix="PUBLISHER_", extra="ignore", populate_by_name=True
    )

    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = metrics_port_field(9103, "PUBLISHER_")
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
        pattern=ID_PATTERN,
        description="This instance's reply subject token: faas.reply.<instance_id>.*",
    )
    history_limit: int = Field(
        20,
        ge=1,
        le=MAX_HISTORY_LIMIT,
        description="Records GET /publisher/executions returns when no limit is given.",
    )
    max_waiters: int = Field(
        256,
        ge=1,
        description="Long polls (GET /publisher/executions/{id}?wait=) this instance holds at "
        "once, each a watch on one record; one more is a 503 too_many_waiters.",
    )
    max_waiters_per_user: int = Field(
        16,
        ge=1,
        description="Long polls one user may hold on this instance at once; one more is a 429 "
        "wait_limit.",
    )
    nats_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a JetStream management request (stream and bucket set-up) may take; "
        "publishes and record writes use NATS_ATTEMPT_SECONDS / NATS_RETRY_SECONDS.",
    )

    @model_validator(mode="after")
    def _queue_timeouts_fit_the_duplicate_window(self) -> PublisherSettings:
        # A keyed retry may publish a job again until its start deadline: the stream must still
        # know the first publish's Nats-Msg-Id then, or the function could run twice.
        window = min(DUPLICATE_WINDOW_SECONDS, float(self.job_max_age_seconds))
        longest = max(self.queue_timeout_seconds, self.async_queue_timeout_seconds)
        if longest > window:
            raise ValueError(
                f"PUBLISHER_ASYNC_QUEUE_TIMEOUT_SECONDS / PUBLISHER_QUEUE_TIMEOUT_SECONDS "
                f"({longest:g}) must be at most the job stream's duplicate window ({window:g} s: "
                f"{DUPLICATE_WINDOW_SECONDS:g} s, capped by JOB_MAX_AGE_SECONDS)"
            )
        return self
