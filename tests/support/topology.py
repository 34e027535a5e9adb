"""The whole platform as separate OS processes on loopback, for fault-injection tests.

``Topology`` starts, in order: the 3-node JetStream cluster of ``nats/nats-server.conf``
(``tests.support.nats_cluster``), auth-service and registry-service (SQLite files in the
topology's directory; one RSA key pair, the private key for auth, the public one for everybody
else), two publisher-services and two spawner-services (``python -m <package>``, configured through
the environment as in production: every NATS URL in ``NATS_URL``, ``NATS_REPLICAS=3``). No
gateway: each service is called on its own port.

Processes can be killed by PID (``kill()``) and ``heal()`` brings everything back: stopped nodes
restart with their ports and store, crashed or stopped services start again, and it waits until
the streams and buckets have a leader with current replicas and every service is ready.

Docker: every function container carries ``faas.managed-by`` and the spawner's instance id in
``faas.spawner``; the spawners of one topology share the prefix ``run_id``, so its containers
are told apart from anybody else's (``containers_created``, ``managed_containers``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from spawner_service.runtime.docker import POOL_LABEL, pooled_owner
from tests.support.images import build, busybox_image, docker, image_exists
from tests.support.keys import RsaKeys, generate_rsa_keys
from tests.support.nats_cluster import NatsCluster, running_cluster
from tests.support.nats_server import LOOPBACK, free_port
from tests.support.processes import (
    LogMark,
    ServiceProcess,
    env_of,
    file_size,
    read_from,
    wait_until,
)

MANAGED_LABEL = "faas.managed-by"
"""``faas_common.contract.MANAGED_LABEL`` (spelled out: the contract module is being changed)."""
EXECUTION_LABEL = "faas.execution-id"
INSTANCE_LABEL = "faas.spawner"
"""Labels the spawner's Docker runtime puts on every function container."""

REPLICATED_STREAMS = ("EXECUTIONS", "KV_executions", "KV_idempotency", "KV_functions")
"""The stream and the buckets (``KV_<bucket>``) the services create with 3 replicas."""

ECHO_IMAGE = "faas-test/faults-echo:1"
SLEEP_IMAGE = "faas-test/faults-sleep:1"
SLEEP_ENV = "SLEEP_SECONDS"
ECHO_ENTRYPOINT = '["/bin/sh", "-c", "printf \'%s\\\\n\' \\"$0\\""]'
SLEEP_ENTRYPOINT = (
    '["/bin/sh", "-c", "sleep \\"${' + SLEEP_ENV + ':-1}\\"; printf \'%s\\\\n\' \\"$0\\""]'
)
"""``sh -c SCRIPT ARG``: the argument is ``$0``; it is data, never a script."""

NATS_LOG_LINES = 25
READY_TIMEOUT = 90.0
HEAL_TIMEOUT = 90.0


def function_images() -> tuple[str, str]:
    """Two tiny busybox function images: ``echo`` prints its argument; ``sleep`` sleeps
    ``$SLEEP_SECONDS`` (a function env variable, default 1) first."""
    base = busybox_image()
    for tag, entrypoint in ((ECHO_IMAGE, ECHO_ENTRYPOINT), (SLEEP_IMAGE, SLEEP_ENTRYPOINT)):
        if not image_exists(tag):
            with tempfile.TemporaryDirectory() as tmp:
                build(Path(tmp), tag, f"FROM {base}\nENTRYPOINT {entrypoint}\nCMD []\n")
    return ECHO_IMAGE, SLEEP_IMAGE


@dataclass(frozen=True)
class TopologySettings:
    queue_timeout_seconds: float = 15.0
    """``PUBLISHER_QUEUE_TIMEOUT_SECONDS`` (and the async one): short, so a job nobody starts
    is final quickly."""
    spawner_max_containers: int = 4
    ack_wait_seconds: float = 12.0
    """Short, so a killed spawner's jobs come back quickly, yet (as in production: 30 s against
    elections of 4-7.5 s) longer than an election plus one heartbeat: a running job whose
    heartbeats fail during an election must not be redelivered."""
    heartbeat_seconds: float = 2.0
    log_level: str = "INFO"


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    for _ in range(count * 20):
        port = free_port()
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("not enough free ports")


@dataclass
class Topology:
    directory: Path
    cluster: NatsCluster
    keys: RsaKeys
    settings: TopologySettings
    run_id: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    auth: ServiceProcess = field(init=False)
    registry: ServiceProcess = field(init=False)
    publishers: dict[str, ServiceProcess] = field(init=False, default_factory=dict)
    spawners: dict[str, ServiceProcess] = field(init=False, default_factory=dict)
    events: ContainerEvents = field(init=False)

    def __post_init__(self) -> None:
        self.events = ContainerEvents(self.run_id, self.directory / "docker-events.log")
        auth_port, registry_port, *publisher_ports = _distinct_ports(4)
        self.auth = ServiceProcess(
            name="auth",
            module="auth_service",
            directory=self.directory / "auth",
            health_url=f"http://{LOOPBACK}:{auth_port}/auth/ready",
            env=env_of(
                {
                    **self._common(),
                    **self._nats(),
                    "DATABASE_URL": f"sqlite+aiosqlite:///{self.directory / 'auth' / 'auth.db'}",
                    "AUTH_HOST": LOOPBACK,
                    "AUTH_PORT": auth_port,
                    "AUTH_PRIVATE_KEY_FILE": self.keys.private_path,
                }
            ),
        )
        self.registry = ServiceProcess(
            name="registry",
            module="registry_service",
            directory=self.directory / "registry",
            health_url=f"http://{LOOPBACK}:{registry_port}/registry/ready",
            env=env_of(
                {
                    **self._common(),
                    **self._nats(),
                    "DATABASE_URL": (
                        f"sqlite+aiosqlite:///{self.directory / 'registry' / 'registry.db'}"
                    ),
                    "REGISTRY_HOST": LOOPBACK,
                    "REGISTRY_PORT": registry_port,
                }
            ),
        )
        for index, port in enumerate(publisher_ports, start=1):
            name = f"publisher-{index}"
            queue_timeout = self.settings.queue_timeout_seconds
            self.publishers[name] = ServiceProcess(
                name=name,
                module="publisher_service",
                directory=self.directory / name,
                health_url=f"http://{LOOPBACK}:{port}/publisher/ready",
                env=env_of(
                    {
                        **self._common(),
                        **self._nats(),
                        "PUBLISHER_HOST": LOOPBACK,
                        "PUBLISHER_PORT": port,
                        "PUBLISHER_INSTANCE_ID": self.publisher_instance(name),
                        "PUBLISHER_QUEUE_TIMEOUT_SECONDS": queue_timeout,
                        "PUBLISHER_ASYNC_QUEUE_TIMEOUT_SECONDS": queue_timeout,
                    }
                ),
            )
        for index in (1, 2):
            self.add_spawner(f"spawner-{index}")

    # --- configuration ------------------------------------------------------------------------

    def _common(self) -> dict[str, object]:
        return {
            "LOG_LEVEL": self.settings.log_level,
            "JWT_PUBLIC_KEY_FILE": self.keys.public_path,
        }

    def _nats(self) -> dict[str, object]:
        return {
            "NATS_URL": self.cluster.nats_url,
            "NATS_SERVERS": self.cluster.nats_url,
            "NATS_REPLICAS": 3,
            "NATS_CONNECT_TIMEOUT": 30,
        }

    def publisher_instance(self, name: str) -> str:
        """A publisher's ``PUBLISHER_INSTANCE_ID`` (its reply subject token)."""
        return f"{self.run_id}-{name}".replace(".", "-")

    def spawner_instance(self, name: str) -> str:
        """A spawner's ``SPAWNER_INSTANCE_ID`` (its containers' ``faas.spawner`` label)."""
        return f"{self.run_id}-{name}"

    def add_spawner(self, name: str, **env: object) -> ServiceProcess:
        """Declare a spawner (not started); ``env`` adds to or overrides its settings."""
        spawner = ServiceProcess(
            name=name,
            module="spawner_service",
            directory=self.directory / name,
            ready_line='"msg": "consuming"',
            env=env_of(
                {
                    **self._common(),
                    **self._nats(),
                    "SPAWNER_INSTANCE_ID": self.spawner_instance(name),
                    "SPAWNER_MAX_CONTAINERS": self.settings.spawner_max_containers,
                    "SPAWNER_ACK_WAIT_SECONDS": self.settings.ack_wait_seconds,
                    "SPAWNER_HEARTBEAT_SECONDS": self.settings.heartbeat_seconds,
                    **env,
                }
            ),
        )
        self.spawners[name] = spawner
        return spawner

    def remove_spawner(self, name: str) -> None:
        """Stop an extra spawner and forget it (``heal`` will not start it again)."""
        spawner = self.spawners.pop(name)
        spawner.stop()

    # --- addresses ----------------------------------------------------------------------------

    @property
    def auth_url(self) -> str:
        return _base(self.auth)

    @property
    def registry_url(self) -> str:
        return _base(self.registry)

    def publisher_url(self, name: str) -> str:
        return _base(self.publishers[name])

    @property
    def services(self) -> list[ServiceProcess]:
        return [self.auth, self.registry, *self.publishers.values(), *self.spawners.values()]

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.events.start()
        self.cluster.start()
        _start_all([self.auth, self.registry])
        _start_all(list(self.publishers.values()))
        _start_all(list(self.spawners.values()))

    def stop(self) -> None:
        """Everything stopped by PID: spawners first (they finish what they hold), then the
        publishers, registry, auth, and the NATS nodes last."""
        groups = [
            list(self.spawners.values()),
            list(self.publishers.values()),
            [self.registry, self.auth],
        ]
        try:
            for group in groups:
                for service in group:
                    service.terminate()
                for service in group:
                    service.stop()
            self.cluster.stop()
        finally:
            self.events.stop()

    def heal(self, timeout: float = HEAL_TIMEOUT) -> None:
        """Every node and service running and ready again (``RuntimeError`` if not in time)."""
        deadline = time.monotonic() + timeout
        for node in self.cluster.nodes:
            node.start()
        self.cluster.wait_for_meta_leader(timeout=max(deadline - time.monotonic(), 1.0))
        if not wait_until(
            lambda: self.cluster.streams_healthy(REPLICATED_STREAMS),
            timeout=max(deadline - time.monotonic(), 1.0),
            interval=0.3,
        ):
            raise RuntimeError(
                f"streams not healthy after a heal: {json.dumps(self.stream_summary())}"
            )
        _start_all(self.services, timeout=max(deadline - time.monotonic(), 1.0))

    def stream_summary(self) -> dict[str, object]:
        """Leader and replica state of each replicated stream (for failure messages)."""
        summary: dict[str, object] = {}
        for name, detail in self.cluster.streams().items():
            cluster = detail.get("cluster") or {}
            summary[name] = {
                "leader": cluster.get("leader"),
                "replicas": [
                    {key: peer.get(key) for key in ("name", "current", "offline", "lag")}
                    for peer in cluster.get("replicas") or []
                ],
                "messages": (detail.get("state") or {}).get("messages"),
            }
        return summary

    def crashed(self) -> list[str]:
        """Names of the processes that exited though nobody stopped them."""
        names = [service.name for service in self.services if service.crashed()]
        names += [
            node.name
            for node in self.cluster.nodes
            if node.wanted and node.process is not None and node.process.poll() is not None
        ]
        return names

    # --- logs ---------------------------------------------------------------------------------

    def marks(self) -> dict[str, LogMark]:
        marks = {service.name: service.mark() for service in self.services}
        for node in self.cluster.nodes:
            marks[node.name] = LogMark(0, file_size(node.log_path))
        return marks

    def logs_since(self, marks: dict[str, LogMark], characters: int = 5000) -> str:
        parts = []
        for service in self.services:
            parts.append(service.logs_since(marks.get(service.name, LogMark(0, 0)), characters))
        for node in self.cluster.nodes:
            mark = marks.get(node.name, LogMark(0, 0))
            lines = [
                line
                for line in read_from(node.log_path, mark.stderr).splitlines()
                if "Error trying to connect to route" not in line  # a peer is down: expected
            ]
            text = "\n".join(lines[-NATS_LOG_LINES:])[-characters:]
            parts.append(f"--- {node.name} (pid {node.pid}) {node.log_path}:\n{text}")
        return "\n".join(parts)

    # --- Docker -------------------------------------------------------------------------------

    def containers_created(self, since: float) -> Counter[str]:
        """``create`` events per execution id of this topology's containers since ``since``."""
        return self.events.created(since)

    def managed_containers(self, *, parked: bool = False) -> list[dict[str, str]]:
        return managed_containers(prefix=self.run_id, parked=parked)

    def remove_containers(self, *, parked: bool = False) -> int:
        """Remove (forced) every container of this topology's spawners (with ``parked``, also
        those still parked: once the spawners are stopped); how many."""
        ids = [container["id"] for container in self.managed_containers(parked=parked)]
        if ids:
            with contextlib.suppress(RuntimeError):
                docker("rm", "-f", *ids, timeout=60)
        return len(ids)


def _base(service: ServiceProcess) -> str:
    assert service.health_url is not None
    return service.health_url.rsplit("/", 2)[0]


START_ATTEMPTS = 3


def _start_all(services: list[ServiceProcess], timeout: float = READY_TIMEOUT) -> None:
    """Start every service, then wait for each. One that exits during its start-up (JetStream
    still electing the leaders of a cluster that just formed) is started again, as an
    orchestrator would, at most ``START_ATTEMPTS`` times."""
    for service in services:
        service.start()
    for service in services:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                service.wait_ready(timeout)
                break
            except RuntimeError:
                if service.running or attempt == START_ATTEMPTS:
                    raise
                service.start()


class ContainerEvents:
    """Docker's ``create`` events for one topology's containers, streamed while it runs, and
    the ``rename`` events of the prewarmed containers calls take (a park creates a container for
    no execution yet; the call that takes it renames it after its execution id).

    ``docker events --since`` alone is not enough: the engine keeps only its last 256 events for
    queries about the past, and a burst of activations makes more than that. So a ``docker
    events`` process (stopped by PID) streams every container ``create`` labelled
    ``faas.managed-by`` from the moment the topology starts, and a thread records the execution
    id and time of those whose ``faas.spawner`` label starts with the topology's prefix; its
    raw lines go to ``docker-events.log``.
    """

    def __init__(self, prefix: str, log_path: Path) -> None:
        self.prefix = prefix
        self.log_path = log_path
        self._events: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "docker",
                "events",
                "--since",
                f"{int(time.time()) - 1}",
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--filter",
                "event=rename",
                "--filter",
                f"label={MANAGED_LABEL}",
                "--format",
                "{{json .}}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="docker-events", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        with contextlib.suppress(OSError, ValueError), self.log_path.open("a") as log:
            for line in process.stdout:
                log.write(line)
                log.flush()
                try:
                    event = json.loads(line)
                    attributes = event["Actor"]["Attributes"]
                    at = int(event["timeNano"]) / 1e9
                except (ValueError, KeyError, TypeError):
                    continue
                execution_id = _execution_of(event.get("Action", ""), attributes)
                if execution_id and str(attributes.get(INSTANCE_LABEL, "")).startswith(self.prefix):
                    with self._lock:
                        self._events.append((at, execution_id))

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def created(self, since: float, settle: float = 1.0) -> Counter[str]:
        """``create`` events per execution id since the epoch time ``since`` (after waiting
        ``settle`` seconds for the last ones to arrive)."""
        if not self.alive:
            raise RuntimeError(f"docker events stopped; see {self.log_path}")
        time.sleep(settle)
        with self._lock:
            return Counter(execution_id for at, execution_id in self._events if at >= since)

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _execution_of(action: str, attributes: dict[str, str]) -> str:
    """The execution a container ``create`` or ``rename`` event is about ("": none, a park)."""
    if action == "create":
        return str(attributes.get(EXECUTION_LABEL, ""))
    taken = pooled_owner({"Labels": attributes, "Names": [attributes.get("name", "")]})
    return taken[0] if taken else ""


def managed_containers(*, prefix: str, parked: bool = False) -> list[dict[str, str]]:
    """Containers (any state) labelled ``faas.managed-by`` whose ``faas.spawner`` label starts
    with ``prefix``, but for prewarmed ones still parked unless ``parked`` (a running spawner
    keeps those): id, spawner, execution id (a taken prewarmed container's from its name, ""
    for a parked one), state."""
    template = (
        '{{.ID}}\t{{.Label "' + INSTANCE_LABEL + '"}}\t{{.Label "' + EXECUTION_LABEL + '"}}\t'
        '{{.State}}\t{{.Names}}\t{{.Label "' + POOL_LABEL + '"}}'
    )
    output = docker("ps", "-a", "--filter", f"label={MANAGED_LABEL}", "--format", template)
    found = []
    for line in output.splitlines():
        parts = line.split("\t")
        if len(parts) != 6 or not parts[1].startswith(prefix):
            continue
        execution_id = parts[2]
        if parts[5]:
            taken = pooled_owner({"Labels": {POOL_LABEL: parts[5]}, "Names": [parts[4]]})
            if taken is None and not parked:
                continue
            execution_id = taken[0] if taken else ""
        found.append(
            {"id": parts[0], "spawner": parts[1], "execution_id": execution_id, "state": parts[3]}
        )
    return found


@contextlib.contextmanager
def running_topology(
    directory: Path, settings: TopologySettings | None = None
) -> Iterator[Topology]:
    """The whole platform started; at the end every process is stopped by PID and every
    container its spawners left is removed."""
    with running_cluster(directory / "nats") as cluster:
        keys = generate_rsa_keys(directory / "keys")
        topology = Topology(directory, cluster, keys, settings or TopologySettings())
        try:
            topology.start()
            yield topology
        finally:
            try:
                topology.stop()
            finally:
                # A spawner killed last by a test leaves its parked containers (its next start
                # would have removed them).
                topology.remove_containers(parked=True)
