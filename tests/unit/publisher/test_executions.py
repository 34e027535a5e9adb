"""GET /publisher/executions/{id} and GET /publisher/executions: a user's own records only."""

from __future__ import annotations

import httpx

from faas_common.contract import ExecutionRecord, FunctionSnapshot
from tests.unit.publisher.factories import PUBLISH, FakeBackends, publish_body, snapshot
from tests.unit.registry.factories import User

EXECUTIONS = "/publisher/executions"


def record(execution_id: str, function: str, created_at: float, **extra: object) -> ExecutionRecord:
    values: dict[str, object] = {
        "execution_id": execution_id,
        "function": function,
        "status": "succeeded",
        "created_at": created_at,
    }
    return ExecutionRecord.model_validate(values | extra)


async def test_get_returns_the_callers_record(
    client: httpx.AsyncClient, alice: User, hello: FunctionSnapshot
) -> None:
    done = await client.post(PUBLISH, json=publish_body(argument="hi"), headers=alice.headers)
    execution_id = done.json()["execution_id"]

    response = await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice.headers)

    assert response.status_code == 200
    assert response.json() == done.json()
    assert set(response.json()) >= {
        "execution_id",
        "function",
        "status",
        "result",
        "exit_code",
        "logs",
        "error",
        "duration_ms",
        "timings",
    }


async def test_someone_elses_execution_is_404(
    client: httpx.AsyncClient, alice: User, bob: User, hello: FunctionSnapshot
) -> None:
    done = await client.post(PUBLISH, json=publish_body(), headers=alice.headers)
    execution_id = done.json()["execution_id"]

    response = await client.get(f"{EXECUTIONS}/{execution_id}", headers=bob.headers)

    assert response.status_code == 404
    assert response.json()["code"] == "execution_not_found"


async def test_unknown_and_malformed_ids_are_404(client: httpx.AsyncClient, alice: User) -> None:
    for execution_id in ("0" * 32, "a.b", "*", "x" * 65):
        response = await client.get(f"{EXECUTIONS}/{execution_id}", headers=alice.headers)
        assert response.status_code == 404, execution_id
        assert response.json()["code"] == "execution_not_found"


async def test_list_is_newest_first_and_only_the_callers(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User, bob: User
) -> None:
    for index, created_at in enumerate((100.0, 300.0, 200.0)):
        await fakes.records.create(alice.id, record(f"a{index}", "hello", created_at))
    await fakes.records.create(bob.id, record("b0", "hello", 400.0))

    response = await client.get(EXECUTIONS, headers=alice.headers)

    assert response.status_code == 200
    assert [item["execution_id"] for item in response.json()["executions"]] == ["a1", "a2", "a0"]


async def test_list_filters_by_function_and_limits(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User
) -> None:
    for index in range(30):
        name = "hello" if index % 3 else "other"
        await fakes.records.create(alice.id, record(f"e{index:02d}", name, float(index)))

    default = await client.get(EXECUTIONS, headers=alice.headers)
    limited = await client.get(f"{EXECUTIONS}?limit=3", headers=alice.headers)
    filtered = await client.get(f"{EXECUTIONS}?function=other&limit=100", headers=alice.headers)
    nothing = await client.get(f"{EXECUTIONS}?function=missing", headers=alice.headers)

    assert len(default.json()["executions"]) == 20
    assert default.json()["executions"][0]["execution_id"] == "e29"
    assert [item["execution_id"] for item in limited.json()["executions"]] == ["e29", "e28", "e27"]
    other = filtered.json()["executions"]
    assert len(other) == 10
    assert {item["function"] for item in other} == {"other"}
    assert [item["created_at"] for item in other] == sorted(
        (item["created_at"] for item in other), reverse=True
    )
    assert nothing.json() == {"executions": []}


async def test_list_shows_activations_as_they_happen(
    client: httpx.AsyncClient, fakes: FakeBackends, alice: User
) -> None:
    fakes.catalog.add(snapshot(alice.id, "hello"))
    fakes.queue.worker = None
    accepted = await client.post(PUBLISH, json=publish_body(is_async=True), headers=alice.headers)

    listed = await client.get(f"{EXECUTIONS}?function=hello", headers=alice.headers)

    [item] = listed.json()["executions"]
    assert item["execution_id"] == accepted.json()["execution_id"]
    assert item["status"] == "queued"
