"""spawner-service settings: the shared ones plus ``SPAWNER_*``."""

from __future__ import annotations

import math
import os
import socket

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from faas_common.contract import DUPLICATE_WINDOW_SECONDS
from faas_common.settings import CommonSettings, metrics_port_field

NATS_MAX_PAYLOAD = 1_048_576
"""NATS's default ``max_payload``: the largest message, so the largest execution record."""
RECORD_ROOM = 65_536
"""Room the record's other fields (and escapes in ordinary text) need beside stdout and logs."""


def default_instance_id() -> str:
    """``<hostname>-<pid>``: unique per process, readable in logs and container names."""
    return f"{socket.gethostname()}-{os.getpid()}"


class SpawnerSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="SPAWNER_", extra="ignore", populate_by_name=True)

    metrics_port: int = metrics_port_field(9104, "SPAWNER_")
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
    """The writable scratch budget of a container (the root filesystem is read-only): ``/tmp``
    and a tmpfs over each ``VOLUME`` its image declares share it in equal parts."""
    shm_bytes: int = Field(16 * 1_048_576, ge=65_536)
    """Size of ``/dev/shm`` (a tmpfs of its own, outside the scratch budget)."""
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
    """Longest an image pull may take in all; an activation waits for it no longer than its own
    deadline either (then ``image_unavailable``, ``pull_timed_out``)."""
    pull_connect_seconds: float = Field(30.0, gt=0)
    """Longest the engine may stay silent during a pull (reaching the registry, then between
    two progress messages) before the pull is abandoned as timed out."""
    image_sweep_days: float = Field(0.0, ge=0)
    """Opt-in: remove images no function has used on this engine for this many days (0: off;
    see ``runtime/image_sweep.py`` for what "used" means)."""
    allow_network: bool = False
    """Operator opt-in: give function containers the ``network`` below instead of none."""
    network: str = "bridge"
    instance_id: str = Field(default_factory=default_instance_id)
    engine_check_seconds: float = Field(1.0, gt=0)
    """How often the Docker engine is pinged (before fetching; while it is down, until it
    answers again: a spawner without an engine fetches no jobs)."""
    fetch_timeout: float = Field(1.0, gt=0)
    """Seconds one fetch waits for jobs; also bounds how long a stop waits for the fetch."""
    fair_share_max_defer_seconds: float = Field(DUPLICATE_WINDOW_SECONDS, ge=0, le=3600)
    """How long, from its first deferral, a job may be handed back so that users below their
    fair share of the running slots go first (0: no fair share, jobs run in arrival order).
    The default is the longest a job can wait to start (the stream's duplicate window, which
    every queue timeout fits in): while other users wait below their share, a user above it
    never jumps ahead of them."""
    fair_share_delay_seconds: float = Field(1.0, gt=0, le=60)
    """How long a job handed back for the fair share stays out of the queue."""
    load_interval_seconds: float = Field(1.0, gt=0, le=60)
    """How often a spawner rewrites its load (capacity, running jobs per user) in the
    ``fair_share`` bucket; an entry not rewritten for 3 intervals is ignored."""

    pool_max_parked: int = Field(8, ge=0, le=1024)
    """Prewarmed containers this spawner keeps parked at most, all functions together (0: no
    pool, every call creates and starts its container)."""
    pool_max_per_function: int = Field(4, ge=1, le=256)
    """Parked containers one function shape (image, env, memory) gets at most."""
    pool_max_memory_mb: int = Field(4096, ge=0)
    """The memory limits of all parked containers together at most (MiB)."""
    pool_idle_seconds: float = Field(120.0, gt=0, le=3600)
    """A shape not called for this long has its parked containers removed."""
    pool_park_after_calls: int = Field(2, ge=1, le=100)
    """A shape is parked for once it had this many calls, the first of them no longer than
    ``pool_idle_seconds`` before the last (a function called once is not parked for: its park
    would only compete with other calls' cold starts)."""
    pool_parallel_parks: int = Field(2, ge=1, le=64)
    """Containers being created and started for the pool at once (refills compete with the
    cold starts of misses for the engine), besides one for each call waiting for a park."""
    pool_shim: str = ""
    """The shim binary as this process sees it (empty: ``spawner-service/shim/build/`` of the
    source tree, as ``spawner-service/shim/build.py`` writes it; the spawner image sets it)."""
    pool_shim_volume: str = ""
    """Operator setting for a spawner in a container: the named volume that holds the shim for
    the function containers (the spawner copies ``pool_shim`` into it, mounted at
    ``pool_shim_dir``). Empty: function containers bind-mount ``pool_shim`` itself."""
    pool_shim_dir: str = "/var/lib/faas-shim"
    """Where this process has ``pool_shim_volume`` mounted."""

    @property
    def pool(self) -> bool:
        return self.pool_max_parked > 0

    @property
    def fair_share(self) -> bool:
        return self.fair_share_max_defer_seconds > 0

    @property
    def consumer_max_deliver(self) -> int:
        """The shared consumer's ``max_deliver``: ``SPAWNER_MAX_DELIVER`` failed deliveries plus
        the most fair-share deferrals a job can get (they are not failures)."""
        if not self.fair_share:
            return self.max_deliver
        deferrals = math.ceil(self.fair_share_max_defer_seconds / self.fair_share_delay_seconds)
        return self.max_deliver + deferrals + 1

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
