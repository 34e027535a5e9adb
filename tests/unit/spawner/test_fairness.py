"""The fair share: the pure decision, and what the job handler does with it (fake slots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from faas_common.contract import ExecutionRecord, Job, load_key
from spawner_service.fairness import View, must_wait, share_of
from spawner_service.handler import JobHandler
from spawner_service.runtime.base import RunResult
from tests.unit.spawner.fakes import (
    FakeMsg,
    FakeRuntime,
    FakeStore,
    Replies,
    make_job,
    make_settings,
    queued_record,
)

# --- the decision -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "users", "share"), [(4, 1, 4), (4, 2, 2), (4, 3, 1), (4, 8, 1), (0, 1, 1)]
)
def test_the_share_is_the_capacity_split_between_users_and_at_least_one(
    capacity: int, users: int, share: int
) -> None:
    assert share_of(capacity, users) == share


def test_a_lone_user_may_take_every_slot() -> None:
    assert not must_wait("a", View(4, in_flight={"a": 9}, running={"a": 3}))


def test_a_user_at_their_share_waits_while_another_user_waits_below_it() -> None:
    # a filled the 4 slots alone; b arrived: the share is 2, a holds 3 after one ended.
    assert must_wait("a", View(4, in_flight={"a": 8, "b": 1}, running={"a": 3}))
    assert must_wait("a", View(4, in_flight={"a": 8, "b": 1}, running={"a": 2}))
    assert not must_wait("a", View(4, in_flight={"a": 8, "b": 1}, running={"a": 1}))
    assert not must_wait("b", View(4, in_flight={"a": 8, "b": 1}, running={"a": 3}))


def test_nobody_waits_for_a_user_whose_jobs_all_run() -> None:
    view = View(4, in_flight={"a": 8, "b": 1}, running={"a": 2, "b": 1})
    assert not must_wait("a", view)


def test_a_slot_left_over_by_the_division_is_not_kept_idle() -> None:
    # 3 users on 4 slots: the share is 1 and everyone has it; the fourth slot is anybody's.
    view = View(4, in_flight={"a": 5, "b": 5, "c": 5}, running={"a": 1, "b": 1, "c": 1})
    assert not must_wait("a", view)


def test_the_capacity_of_every_spawner_counts() -> None:
    # Two spawners of 4: the share of two users is 4.
    assert not must_wait("a", View(8, in_flight={"a": 9, "b": 2}, running={"a": 3, "b": 1}))
    assert must_wait("a", View(8, in_flight={"a": 9, "b": 2}, running={"a": 4, "b": 1}))


def test_load_keys_hold_only_key_characters() -> None:
    assert load_key("host.example-12") == "load.host_example-12"


# --- the handler ------------------------------------------------------------------------------


@dataclass
class FakeSlots:
    allow: bool = True
    deferred: dict[str, int] = field(default_factory=dict)
    admitted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    async def admit(self, job: Job) -> bool:
        if not self.allow:
            self.deferred[job.execution_id] = self.deferred.get(job.execution_id, 0) + 1
            return False
        self.admitted.append(job.user_id)
        return True

    def hold(self, user_id: str) -> None:
        self.held.append(user_id)

    def release(self, user_id: str) -> None:
        self.released.append(user_id)

    async def deferrals(self, execution_id: str) -> int:
        return self.deferred.get(execution_id, 0)


def handler_with(
    slots: FakeSlots, runtime: FakeRuntime, store: FakeStore, **settings: Any
) -> JobHandler:
    runtime.store = store
    return JobHandler(
        make_settings(**settings), runtime=runtime, store=store, publish=Replies(), slots=slots
    )


def record_of(store: FakeStore, job: Job) -> ExecutionRecord:
    record = store.current(job.user_id, job.execution_id)
    assert record is not None
    return record


async def test_a_job_that_must_wait_is_handed_back_with_the_fair_share_delay() -> None:
    slots, runtime, store = FakeSlots(allow=False), FakeRuntime(), FakeStore()
    handler = handler_with(slots, runtime, store, fair_share_delay_seconds=0.75)
    job = make_job()
    store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode())
    await handler.handle(msg)
    assert msg.actions == [("nak", 0.75)]
    assert runtime.specs == []  # nothing ran
    assert record_of(store, job).status == "queued"
    assert slots.released == []


async def test_an_admitted_job_runs_and_its_slot_is_released() -> None:
    slots, runtime, store = FakeSlots(), FakeRuntime(), FakeStore()
    handler = handler_with(slots, runtime, store)
    job = make_job()
    store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode())
    await handler.handle(msg)
    assert msg.actions == [("ack", None)]
    assert record_of(store, job).status == "succeeded"
    assert (slots.admitted, slots.released) == ([job.user_id], [job.user_id])


async def test_a_redelivery_adopting_its_container_is_never_held_back() -> None:
    adopted = RunResult("succeeded", exit_code=0, stdout=b"adopted\n")
    slots, runtime, store = FakeSlots(allow=False), FakeRuntime(adopted=adopted), FakeStore()
    handler = handler_with(slots, runtime, store)
    job = make_job()
    store.seed(job.user_id, queued_record(job).model_copy(update={"status": "running"}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=2)
    await handler.handle(msg)
    assert msg.actions == [("ack", None)]
    assert record_of(store, job).result == "adopted"
    assert (slots.held, slots.released) == ([job.user_id], [job.user_id])


async def test_hand_backs_for_the_fair_share_are_not_failed_deliveries() -> None:
    # Delivered 4 times, 3 of them handed back: the first failure is not the last allowed one.
    failing = FakeRuntime(RunResult("runtime_unavailable", detail="engine down"))
    slots, store = FakeSlots(deferred={}), FakeStore()
    handler = handler_with(slots, failing, store, max_deliver=2, retry_delay_seconds=1.0)
    job = make_job()
    slots.deferred[job.execution_id] = 3
    store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=4)
    await handler.handle(msg)
    assert msg.actions == [("nak", 1.0)]  # retried, not given up on
    assert record_of(store, job).status == "queued"

    # Delivered 5 times, 3 handed back: this second failure is the last allowed one.
    again = FakeMsg(job.model_dump_json().encode(), delivered=5)
    await handler.handle(again)
    assert again.actions == [("ack", None)]
    assert (record_of(store, job).status, record_of(store, job).error) == (
        "failed",
        "runtime_unavailable",
    )


async def test_a_surplus_message_handed_back_counts_only_failed_deliveries() -> None:
    slots, store = FakeSlots(), FakeStore()
    handler = handler_with(slots, FakeRuntime(), store, max_deliver=2)
    job = make_job()
    slots.deferred[job.execution_id] = 5
    msg = FakeMsg(job.model_dump_json().encode(), delivered=6)
    await handler.release(msg)
    assert msg.actions == [("nak", None)]


def test_the_consumer_has_room_for_every_hand_back_a_job_can_get() -> None:
    settings = make_settings(
        max_deliver=3, fair_share_max_defer_seconds=30, fair_share_delay_seconds=1.0
    )
    assert settings.consumer_max_deliver == 3 + 30 + 1
    assert make_settings(max_deliver=3, fair_share_max_defer_seconds=0).consumer_max_deliver == 3
