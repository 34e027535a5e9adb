"""The execution history read from the real ``executions`` bucket: newest first, filtered,
bounded, and without leaving consumers behind on the server."""

from __future__ import annotations

import time

from nats.js import JetStreamContext

from faas_common.contract import EXECUTIONS_BUCKET, ExecutionRecord
from faas_common.executions import ExecutionStore, new_execution_id


def record(function: str, execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id, function=function, status="succeeded", created_at=time.time()
    )


def test_execution_ids_sort_by_creation_time() -> None:
    ids = [new_execution_id() for _ in range(200)]
    assert ids == sorted(ids)
    assert all(len(execution_id) == 32 for execution_id in ids)
    assert len(set(ids)) == len(ids)


async def test_history_is_newest_first_filtered_and_bounded(js: JetStreamContext) -> None:
    store = await ExecutionStore.open(js, replicas=1, ttl_seconds=3600)
    written: list[ExecutionRecord] = []
    for index in range(30):
        function = "even" if index % 2 == 0 else "odd"
        written.append(record(function, new_execution_id()))
        await store.create("alice", written[-1])
    await store.create("bob", record("even", new_execution_id()))

    newest_even = [r.execution_id for r in reversed(written) if r.function == "even"][:5]
    listed = await store.list_for_user("alice", function="even", limit=5)
    assert [r.execution_id for r in listed] == newest_even

    everything = await store.list_for_user("alice", limit=100)
    assert [r.execution_id for r in everything] == [r.execution_id for r in reversed(written)]
    assert await store.list_for_user("nobody", limit=10) == []

    info = await js.stream_info(f"KV_{EXECUTIONS_BUCKET}")
    assert info.state.consumer_count == 0
