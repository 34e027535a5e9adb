"""nats/nats-server.conf run for real: three nodes form the JetStream cluster of docker-compose.yml.

The three servers run from the deployment's own configuration file, on loopback: only what a
single machine cannot reproduce is changed, namely the addresses (each node gets its own client,
monitoring and cluster port, and the route list names those ports instead of nats-1..3:6222)
and the JetStream store (a directory per node instead of the /data volume). Then the platform's
own stream and bucket definitions are created with 3 replicas, the stream leader is killed, and
the data must still be there and writable.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_STREAM, FUNCTIONS_BUCKET, executions_stream_config
from faas_common.nats import ensure_kv, ensure_stream
from faas_common.settings import CommonSettings
from tests.support.nats_cluster import NODES, Node, running_cluster

pytestmark = [pytest.mark.nats, pytest.mark.timeout(180)]

T = TypeVar("T")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    with running_cluster(tmp_path) as nats_cluster:
        yield nats_cluster.nodes


@pytest.fixture
async def client(cluster: list[Node]) -> AsyncIterator[NATS]:
    nc = await nats.connect(
        servers=[node.url for node in cluster],
        name="deploy-test",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        connect_timeout=2,
    )
    try:
        yield nc
    finally:
        await nc.close()


async def retry(operation: str, attempt: Callable[[], Awaitable[T]], seconds: float = 30.0) -> T:
    """Run ``attempt()`` until it succeeds: JetStream stalls while a leader is elected."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except (nats.errors.TimeoutError, nats.js.errors.Error, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{operation} kept failing for {seconds:.0f} s") from None
            await asyncio.sleep(0.3)


def test_every_node_reads_the_configuration_and_names_itself(cluster: list[Node]) -> None:
    for node in cluster:
        varz = node.monitor("varz")
        assert varz["server_name"] == node.name
        cluster_info = varz["cluster"]
        assert isinstance(cluster_info, dict)
        assert cluster_info["name"] == "faas"
        jetstream = varz["jetstream"]
        assert isinstance(jetstream, dict)
        config = jetstream["config"]
        assert isinstance(config, dict)
        assert str(config["store_dir"]).endswith(f"{node.name}/store/jetstream")


async def test_streams_and_buckets_survive_the_loss_of_a_node(
    cluster: list[Node], client: NATS
) -> None:
    js: JetStreamContext = client.jetstream(timeout=5)
    config = executions_stream_config(CommonSettings(nats_replicas=3))
    stream = await ensure_stream(js, config)
    assert stream.config.num_replicas == 3
    kv = await ensure_kv(js, FUNCTIONS_BUCKET, replicas=3)
    # A new R3 stream elects its own leader first: the first writes may find none yet (the
    # services retry the same way).
    await retry("kv put", lambda: kv.put("user-1.hello", b"before"))
    await retry(
        "publish",
        lambda: js.publish("faas.exec.user-1", b"job-before", headers={"Nats-Msg-Id": "before"}),
    )

    info = await js.stream_info(EXECUTIONS_STREAM)
    assert info.cluster is not None
    leader = info.cluster.leader
    assert leader in NODES
    replicas = info.cluster.replicas or []
    assert sorted(str(peer.name) for peer in replicas) == sorted(set(NODES) - {leader})

    victim = next(node for node in cluster if node.name == leader)
    assert victim.process is not None
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(timeout=10)

    await retry(
        "publish",
        lambda: js.publish("faas.exec.user-2", b"job-after", headers={"Nats-Msg-Id": "after"}),
    )
    await retry("kv put", lambda: kv.put("user-2.hello", b"after"))

    entry = await retry("kv get", lambda: kv.get("user-1.hello"))
    assert entry.value == b"before"
    info = await js.stream_info(EXECUTIONS_STREAM)
    assert info.state.messages == 2
    assert info.cluster is not None
    assert info.cluster.leader != leader, "another node leads the stream now"

    # A consumer is created through the meta leader, which may have been the node killed too.
    subscription = await retry(
        "consumer creation", lambda: js.pull_subscribe("faas.exec.>", durable="deploy-test")
    )
    messages = await subscription.fetch(2, timeout=10)
    assert sorted(message.data for message in messages) == [b"job-after", b"job-before"]
