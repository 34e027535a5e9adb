"""The 3-node JetStream cluster of docker-compose.yml, on loopback, from ``nats/nats-server.conf``.

Every node runs the deployment's own configuration file; only what one machine cannot reproduce
is changed: the addresses (each node gets its own client, monitoring and cluster port, and the
route list names those ports instead of ``nats-1..3:6222``) and the JetStream store (a directory
per node instead of the ``/data`` volume). A node keeps its name, ports and store across
``kill()`` / ``start()``, so a restarted node rejoins the cluster as the same peer.

Files, under the directory given: ``<name>.conf``, ``<name>.log`` (the server's stdout and
stderr) and ``<name>/store``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import deploy
from tests.support.infra import require
from tests.support.nats_server import LOOPBACK, find_nats_server, free_port
from tests.support.processes import OwnProcess

NODES = ("nats-1", "nats-2", "nats-3")


def node_config(store: Path) -> str:
    """The deployment's configuration with the JetStream store moved to ``store``."""
    text = deploy.NATS_CONFIG.read_text(encoding="utf-8")
    moved, count = re.subn(r"(?m)^(\s*store_dir:\s*)\S+", rf"\g<1>{store}", text)
    assert count == 1, "nats-server.conf sets store_dir exactly once"
    return moved


@dataclass
class Node(OwnProcess):
    """One nats-server of the cluster, as an OS process of its own."""

    name: str
    client_port: int
    monitor_port: int
    cluster_port: int
    directory: Path
    binary: Path | None = None
    routes: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0, init=False)
    wanted: bool = field(default=False, init=False)
    """Started and not stopped or killed on purpose since: an exit is a crash."""

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.name}.conf"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def store(self) -> Path:
        return self.directory / self.name / "store"

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """A monitoring endpoint's JSON (``varz``, ``jsz?streams=true``, ``connz?subs=true``)."""
        url = f"http://{LOOPBACK}:{self.monitor_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as reply:
            data: dict[str, Any] = json.load(reply)
            return data

    def start(self) -> None:
        """Start the server (no-op while it runs); it joins the others by its route list."""
        if self.running:
            return
        assert self.binary is not None, "a node needs the nats-server binary to start"
        self.store.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(node_config(self.store))
        self.starts += 1
        self.wanted = True
        with self.log_path.open("ab") as log:
            log.write(f"\n=== harness: start #{self.starts} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "--config",
                    str(self.config_path),
                    "--addr",
                    LOOPBACK,
                    "--port",
                    str(self.client_port),
                    "--http_port",
                    str(self.monitor_port),
                    "--cluster",
                    f"nats://{LOOPBACK}:{self.cluster_port}",
                    "--routes",
                    self.routes,
                ],
                env={**os.environ, "NATS_SERVER_NAME": self.name},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def log_tail(self, characters: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            return ""


@dataclass
class NatsCluster:
    nodes: list[Node]

    @classmethod
    def allocate(cls, directory: Path, binary: Path | None = None) -> NatsCluster:
        """Three nodes with distinct free loopback ports, not started."""
        ports: set[int] = set()

        def port() -> int:
            for _ in range(50):
                candidate = free_port()
                if candidate not in ports:
                    ports.add(candidate)
                    return candidate
            raise RuntimeError("no free port found")

        nodes = [Node(name, port(), port(), port(), directory, binary) for name in NODES]
        routes = ",".join(f"nats://{LOOPBACK}:{node.cluster_port}" for node in nodes)
        for node in nodes:
            node.routes = routes
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def nats_url(self) -> str:
        """Every node's URL, comma-separated (the services' ``NATS_URL``)."""
        return ",".join(self.urls)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def running_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_for_meta_leader(timeout)

    def stop(self) -> None:
        for node in self.nodes:  # all at once, then wait for each
            node.terminate()
        for node in self.nodes:
            node.stop()

    def wait_for_meta_leader(self, timeout: float = 30.0) -> None:
        """Until a running node reports a meta leader of a 3-peer cluster (fails the test if a
        node exits or none is elected within ``timeout``)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 2):  # bounded in count and in time
            if time.monotonic() > deadline:
                break
            for node in self.nodes:
                process = node.process
                if node.wanted and process is not None and process.poll() is not None:
                    pytest.fail(f"{node.name} exited at start-up:\n{node.log_tail()}")
            for node in self.running_nodes():
                with contextlib.suppress(OSError, ValueError):
                    meta = node.monitor("jsz").get("meta_cluster")
                    if (
                        isinstance(meta, dict)
                        and meta.get("leader")
                        and meta.get("cluster_size") == len(self.nodes)
                    ):
                        return
            time.sleep(0.2)
        pytest.fail(f"the {len(self.nodes)} nodes did not elect a JetStream meta leader")

    def streams(self) -> dict[str, dict[str, Any]]:
        """Every stream's ``/jsz`` detail (config, state, cluster), as its leader reports it
        (the leader's view of its replicas is the current one), else as any node reports it;
        empty when no node answers."""
        found: dict[str, dict[str, Any]] = {}
        for node in self.running_nodes():
            try:
                jsz = node.monitor("jsz?accounts=true&streams=true&consumers=true&config=true")
            except (OSError, ValueError):
                continue
            for account in jsz.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    name = str(stream.get("name"))
                    leader = (stream.get("cluster") or {}).get("leader")
                    if name not in found or leader == node.name:
                        found[name] = stream
        return found

    def deliveries(self, stream: str, consumer: str) -> tuple[int, int] | None:
        """``(messages ever stored in stream, deliveries ever made by consumer)``: the stream's
        last sequence and the consumer's delivery sequence (redeliveries included), the highest
        any node reports; None when no node reports both."""
        best: tuple[int, int] | None = None
        for node in self.running_nodes():
            try:
                jsz = node.monitor("jsz?accounts=true&streams=true&consumers=true")
            except (OSError, ValueError):
                continue
            for account in jsz.get("account_details") or []:
                for detail in account.get("stream_detail") or []:
                    if detail.get("name") != stream:
                        continue
                    stored = int((detail.get("state") or {}).get("last_seq") or 0)
                    for info in detail.get("consumer_detail") or []:
                        if info.get("name") == consumer:
                            delivered = int((info.get("delivered") or {}).get("consumer_seq") or 0)
                            if best is None:
                                best = (stored, delivered)
                            else:
                                best = (max(best[0], stored), max(best[1], delivered))
        return best

    def stream_leader(self, stream: str) -> str | None:
        """The name of the node leading ``stream`` now (None: unknown, or an election)."""
        detail = self.streams().get(stream)
        if detail is None:
            return None
        cluster = detail.get("cluster") or {}
        leader = cluster.get("leader")
        return str(leader) if leader else None

    def leaders(self) -> dict[str, str | None]:
        """The leader of every stream and of every consumer (``STREAM/consumer``), as the
        nodes report them now (for notes about what a kill hit)."""
        found: dict[str, str | None] = {}
        for name, detail in sorted(self.streams().items()):
            found[name] = (detail.get("cluster") or {}).get("leader")
            for consumer in detail.get("consumer_detail") or []:
                leader = (consumer.get("cluster") or {}).get("leader")
                found[f"{name}/{consumer.get('name')}"] = leader
        return found

    def streams_healthy(self, names: tuple[str, ...]) -> bool:
        """Whether each stream in ``names`` has a leader and every other peer is current."""
        details = self.streams()
        for name in names:
            detail = details.get(name)
            if detail is None:
                return False
            cluster = detail.get("cluster") or {}
            if not cluster.get("leader"):
                return False
            replicas = cluster.get("replicas") or []
            if len(replicas) != len(self.nodes) - 1:
                return False
            if not all(peer.get("current") and not peer.get("offline") for peer in replicas):
                return False
        return True

    def connected_to(self, client_name: str, subject: str | None = None) -> list[str]:
        """Nodes holding a client connection named ``client_name`` (and, when given, one that
        subscribes to ``subject``)."""
        nodes = []
        for node in self.running_nodes():
            try:
                connz = node.monitor("connz?subs=true&limit=1024")
            except (OSError, ValueError):
                continue
            for connection in connz.get("connections") or []:
                if connection.get("name") != client_name:
                    continue
                if subject is not None and subject not in (
                    connection.get("subscriptions_list") or []
                ):
                    continue
                nodes.append(node.name)
                break
        return nodes


@contextlib.contextmanager
def running_cluster(directory: Path) -> Iterator[NatsCluster]:
    """A started cluster (meta leader elected); every node is stopped by PID afterwards."""
    binary = find_nats_server()
    if binary is None:
        require("nats-server", "no nats-server binary next to the interpreter nor on PATH")
    cluster = NatsCluster.allocate(directory, binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
