"""The messaging contract: every subject, stream and bucket name, and the messages on them.

Producers and consumers import these names and models; nobody builds this JSON by hand.
"""

from __future__ import annotations

from typing import Literal

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ConfigDict, Field

FUNCTIONS_BUCKET = "functions"
"""KV read model of the registry: key ``<user_id>.<function_name>``, value ``FunctionSnapshot``."""

EXECUTIONS_BUCKET = "executions"
"""KV bucket of execution records (with a TTL), for async polling and history."""

IDEMPOTENCY_BUCKET = "idempotency"
"""KV bucket of claimed ``Idempotency-Key`` headers (key ``<user_id>.<sha256 of the header>``),
with the executions' TTL: a retried activation finds the execution its first attempt started."""

EXECUTIONS_STREAM = "EXECUTIONS"
EXEC_SUBJECT_PREFIX = "faas.exec"
SPAWNER_CONSUMER = "spawners"


def function_key(user_id: str, name: str) -> str:
    return f"{user_id}.{name}"


def exec_subject(user_id: str) -> str:
    return f"{EXEC_SUBJECT_PREFIX}.{user_id}"


class FunctionSnapshot(BaseModel):
    """What an activation needs to know about a function, as the registry last wrote it."""

    model_config = ConfigDict(frozen=True)

    id: str
    owner_id: str
    name: str
    image: str
    timeout_seconds: int
    memory_mb: int
    env: dict[str, str] = Field(default_factory=dict)
    updated_at: str


REPLY_SUBJECT_PREFIX = "faas.reply"
"""Results go back on ``faas.reply.<publisher instance>.<execution id>`` (core NATS)."""

MANAGED_LABEL = "faas.managed-by"
"""Docker label on every function container; the spawner only ever touches containers with it."""

ExecutionStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "rejected"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "rejected"})


def reply_subject(instance_id: str, execution_id: str) -> str:
    return f"{REPLY_SUBJECT_PREFIX}.{instance_id}.{execution_id}"


def execution_key(user_id: str, execution_id: str) -> str:
    """Key of an execution record: the user's id first, so a user only ever reads their own."""
    return f"{user_id}.{execution_id}"


def executions_stream_config(
    *, max_in_flight: int, max_in_flight_per_user: int, replicas: int, max_age: float
) -> StreamConfig:
    """The ``EXECUTIONS`` stream. A job stays in it until its activation is finished, so its
    message limits are the concurrency limits: a publish into a full stream is refused.

    ``max_age`` (seconds, ``JOB_MAX_AGE_SECONDS``) is a backstop: a job that was never acked nor
    terminated (its deliveries used up by spawners that died) is dropped after it, instead of
    holding a slot of the limits forever."""
    return StreamConfig(
        name=EXECUTIONS_STREAM,
        subjects=[f"{EXEC_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs=max_in_flight,
        max_msgs_per_subject=max_in_flight_per_user,
        num_replicas=replicas,
        duplicate_window=120.0,
        max_age=max_age,
    )


class Job(BaseModel):
    """One activation, as the publisher queues it and a spawner runs it."""

    execution_id: str
    user_id: str
    function: FunctionSnapshot
    argument: str
    reply_subject: str | None = None
    enqueued_at: float
    start_deadline: float
    """Epoch seconds: a job not started by then is dropped (its caller has given up)."""
    request_id: str | None = None


class ExecutionRecord(BaseModel):
    """What a sync call answers and what ``GET /publisher/executions/{id}`` returns."""

    execution_id: str
    function: str
    status: ExecutionStatus
    result: str | None = None
    exit_code: int | None = None
    logs: str | None = None
    error: str | None = None
    """A code (``function_failed``, ``timed_out``, ...) when the activation did not succeed."""
    detail: str | None = None
    """A sentence for people about ``error`` (killed at the timeout, out of memory, pull error)."""
    duration_ms: float | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    """Milliseconds per phase: queue, pull, create, start, run, remove."""
    created_at: float
    finished_at: float | None = None
