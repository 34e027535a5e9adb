"""The messaging contract: every subject, stream and bucket name, header, and the messages on
them, plus the ``EXECUTIONS`` stream's set-up that the publisher and the spawner both run.

Producers and consumers import these names and models; nobody builds this JSON by hand. Importing
this module loads pydantic and nats-py only (no web framework, no database driver).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Literal, TypeGuard

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import StreamInfo

    from faas_common.settings import CommonSettings

FUNCTIONS_BUCKET = "functions"
"""KV read model of the registry: key ``<user_id>.<function_name>``, value ``FunctionSnapshot``."""

EXECUTIONS_BUCKET = "executions"
"""KV bucket of execution records (with a TTL), for async polling and history."""

IDEMPOTENCY_BUCKET = "idempotency"
"""KV bucket of claimed ``Idempotency-Key`` headers (key ``<user_id>.<sha256 of the header>``),
with the executions' TTL: a retried activation finds the execution its first attempt started."""

REVOCATIONS_BUCKET = "revocations"
"""KV bucket of revoked tokens (key ``token.<jti>``) and deleted accounts (key
``user.<user_id>``), value ``Revocation``; written by auth-service, watched into memory by every
service that verifies tokens. Entries expire after ``revocation_max_age(AUTH_TOKEN_TTL_SECONDS)``:
auth-service sets the bucket's max age at start-up."""

REVOCATION_MARGIN_SECONDS = 300
"""How much longer than the token lifetime an entry lives (clock skew, verifier leeway)."""

MAX_TOKEN_TTL_SECONDS = 7 * 24 * 3600
"""The longest token lifetime auth-service may be configured to issue."""


def revocation_max_age(token_ttl_seconds: float) -> float:
    """The ``revocations`` bucket's max age for tokens that live ``token_ttl_seconds``: an entry
    outlives every token it refuses (a token revoked at once lives that long at most)."""
    return token_ttl_seconds + REVOCATION_MARGIN_SECONDS


REVOCATION_MAX_AGE_SECONDS = revocation_max_age(MAX_TOKEN_TTL_SECONDS)
"""The longest max age the bucket can need: what a service other than auth-service creates a
missing bucket with (auth-service shortens it to its own token lifetime when it starts)."""

EXECUTIONS_STREAM = "EXECUTIONS"
EXEC_SUBJECT_PREFIX = "faas.exec"
SPAWNER_CONSUMER = "spawners"

FAIR_SHARE_BUCKET = "fair_share"
"""KV bucket of the spawners' fair-share state (TTL ``JOB_MAX_AGE_SECONDS``): ``load.<spawner
instance>`` = ``SpawnerLoad`` (its capacity and running jobs per user, rewritten every second),
``deferred.<execution_id>`` = ``Deferral`` (how often a job was held back for other users)."""

IMAGE_USE_BUCKET = "image_use"
"""KV bucket of the spawners' image sweep (``SPAWNER_IMAGE_SWEEP_DAYS``): ``<engine id>.<image
id>`` = when a spawner of that engine last created a container from the image."""

MSG_ID_HEADER = "Nats-Msg-Id"
"""A job's execution id: JetStream drops a second publish of it inside the duplicate window."""
REQUEST_ID_HEADER = "X-Request-ID"
"""The HTTP request id, carried on the job message (and in the job) to the spawner's logs."""
RECORD_REVISION_HEADER = "Faas-Record-Revision"
"""On a job message: the revision of the ``queued`` record its publisher wrote. A spawner's first
delivery starts from that record without reading it (its ``running`` write is a compare-and-set
at that revision: a record changed since is read then)."""
STREAM_FULL = 10077
"""JetStream ``err_code`` of a publish refused by the stream's limits (total or per subject)."""
HEADER_ROOM = 4_096
"""Bytes of a NATS message kept for its headers (``Nats-Msg-Id``, ``X-Request-ID``, a KV
update's expected revision): a job or a record may use ``max_payload`` minus this."""
DUPLICATE_WINDOW_SECONDS = 900.0
"""The stream's duplicate window (capped by ``JOB_MAX_AGE_SECONDS``). A publisher may publish a
job again (a keyed retry after its first publisher died) until the job's start deadline, so
every queue timeout must fit inside it."""

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""One subject or key token we mint or accept: execution ids, instance ids, function names.
As a JSON Schema / pydantic pattern ``$`` is the end of the value; in Python's ``re`` it also
matches before a trailing newline, so Python code checks a token with ``is_id``."""
ID_RE = re.compile(ID_PATTERN)


def is_id(value: str) -> bool:
    """Whether ``value`` is one whole token (a full match: ``"abc\\n"`` is not)."""
    return ID_RE.fullmatch(value) is not None


REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""A request id the platform keeps (from the gateway, a client or a job's headers); any other
value is replaced by a new one (``new_request_id``)."""
REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)


def is_request_id(value: str | None) -> TypeGuard[str]:
    """Whether ``value`` is a whole request id (a full match, like ``is_id``)."""
    return value is not None and REQUEST_ID_RE.fullmatch(value) is not None


def new_request_id() -> str:
    """32 hex digits (a random UUID): the id of a request that came without a usable one."""
    return uuid.uuid4().hex


PHASES = ("queue", "pool", "pull", "create", "start", "run", "remove")
"""Keys of an execution record's ``timings`` (milliseconds); a phase that did not happen is
absent. ``queue`` is measured by the spawner, the others by its container runtime: ``pool`` is
the hand-off to a prewarmed container (a pool hit: no ``pull``, ``create``, ``start`` and
``remove``, which happen off the call's path); a cold start has ``create`` and ``start``."""


def function_key(user_id: str, name: str) -> str:
    return f"{user_id}.{name}"


def exec_subject(user_id: str) -> str:
    return f"{EXEC_SUBJECT_PREFIX}.{user_id}"


def revoked_token_key(jti: str) -> str:
    return f"token.{jti}"


def deleted_user_key(user_id: str) -> str:
    return f"user.{user_id}"


class Revocation(BaseModel):
    """A ``revocations`` entry: a revoked token (``token.<jti>``) or a deleted account
    (``user.<user_id>``, every token of the user is refused)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    revoked_at: float
    """Epoch seconds."""


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

ErrorCode = Literal[
    "function_failed",
    "timed_out",
    "output_too_large",
    "image_unavailable",
    "runtime_unavailable",
    "concurrency_limit",
    "storage_full",
]
"""Why an execution did not succeed (a record's ``error``):

- ``function_failed``: non-zero exit (also killed for memory, or no such executable);
- ``timed_out``: killed at the function's timeout, or not started before the start deadline;
- ``output_too_large``: stdout over the cap, or a record too large to store;
- ``image_unavailable``: the image is missing and cannot be pulled;
- ``runtime_unavailable``: no worker could run it (NATS or the Docker engine failed);
- ``concurrency_limit``: refused at admission (status ``rejected``);
- ``storage_full``: the execution records bucket is full (its ``max_bytes``): not run.
"""


def reply_subject(instance_id: str, execution_id: str) -> str:
    return f"{REPLY_SUBJECT_PREFIX}.{instance_id}.{execution_id}"


def execution_key(user_id: str, execution_id: str) -> str:
    """Key of an execution record: the user's id first, so a user only ever reads their own."""
    return f"{user_id}.{execution_id}"


def executions_stream_config(settings: CommonSettings) -> StreamConfig:
    """The ``EXECUTIONS`` stream. A job stays in it until its activation is finished, so its
    message limits are the concurrency limits (``MAX_IN_FLIGHT``, ``MAX_IN_FLIGHT_PER_USER``):
    a publish into a full stream is refused. So is one over its ``max_bytes``
    (``STREAM_MAX_BYTES``): the same ``err_code``, the same 429.

    ``max_age`` (``JOB_MAX_AGE_SECONDS``) is a backstop: a job that was never acked nor
    terminated (its deliveries used up by spawners that died) is dropped after it, instead of
    holding a slot of the limits forever."""
    max_age = float(settings.job_max_age_seconds)
    return StreamConfig(
        name=EXECUTIONS_STREAM,
        subjects=[f"{EXEC_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        discard_new_per_subject=True,
        max_msgs=settings.max_in_flight,
        max_msgs_per_subject=settings.max_in_flight_per_user,
        max_bytes=settings.stream_max_bytes,
        num_replicas=settings.nats_replicas,
        duplicate_window=min(DUPLICATE_WINDOW_SECONDS, max_age),
        max_age=max_age,
    )


async def ensure_executions_stream(js: JetStreamContext, settings: CommonSettings) -> StreamInfo:
    """Create the ``EXECUTIONS`` stream or bring its limits in line (every publisher and spawner
    runs this at start-up with the shared settings)."""
    from faas_common.nats import ensure_stream

    return await ensure_stream(js, executions_stream_config(settings))


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
    """The ``X-Request-ID`` of the call (also in the message's headers), for the spawner's logs
    and the execution record."""


class ExecutionRecord(BaseModel):
    """What a sync call answers and what ``GET /publisher/executions/{id}`` returns."""

    execution_id: str
    function: str
    status: ExecutionStatus
    result: str | None = None
    exit_code: int | None = None
    logs: str | None = None
    error: ErrorCode | None = None
    """Why the activation did not succeed (see ``ErrorCode``)."""
    detail: str | None = None
    """A sentence for people about ``error`` (killed at the timeout, out of memory, pull error)."""
    duration_ms: float | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    """Milliseconds per phase (``PHASES``)."""
    created_at: float
    start_deadline: float | None = None
    """Epoch seconds: a record still ``queued`` after it is ``timed_out`` (nobody started it)."""
    finished_at: float | None = None
    request_id: str | None = None
    """The ``X-Request-ID`` of the call that started the activation (absent in records written
    before it was kept). A keyed retry answers the first call's record, with its request id."""


def load_key(instance_id: str) -> str:
    """Key of a spawner's ``SpawnerLoad`` (characters a key cannot hold become ``_``)."""
    return "load." + re.sub(r"[^A-Za-z0-9_=-]", "_", instance_id)


def deferral_key(execution_id: str) -> str:
    return f"deferred.{execution_id}"


class SpawnerLoad(BaseModel):
    """What one spawner runs: its free-or-busy container slots and its running jobs per user."""

    instance_id: str
    capacity: int
    """Container slots it fills now (0 while its engine is down or it is stopping)."""
    running: dict[str, int] = Field(default_factory=dict)
    """Jobs it holds that are past the fair-share check (starting or running), per user id."""


class Deferral(BaseModel):
    """A job handed back for other users' fair share: ``count`` times, the first at
    ``first_at`` (epoch seconds). These deliveries are not failures of the job."""

    first_at: float
    count: int
