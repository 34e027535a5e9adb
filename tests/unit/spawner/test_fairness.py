"""The fair share: the pure decision, and what the job handler does with it (fake slots)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from faas_common.contract import (
    EXEC_SUBJECT_PREFIX,
    ExecutionRecord,
    Job,
    SpawnerLoad,
    deferral_key,
    load_key,
)
from spawner_service.fairness import FairShare, LoadBoard, View, must_wait, share_of
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
    unreadable: bool = False
    """The deferral counts cannot be read (the bucket does not answer)."""
    admitted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)

    async def admit(self, job: Job, delivered: int | None) -> bool:
        if not self.allow:
            self.deferred[job.execution_id] = self.deferred.get(job.execution_id, 0) + 1
            return False
        self.admitted.append(job.user_id)
        return True

    def hold(self, user_id: str) -> None:
        self.held.append(user_id)

    def release(self, user_id: str) -> None:
        self.released.append(user_id)

    async def deferrals(self, execution_id: str) -> int | None:
        return None if self.unreadable else self.deferred.get(execution_id, 0)

    async def forget(self, execution_id: str) -> None:
        self.forgotten.append(execution_id)


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


# --- deferral counts that cannot be read, deliveries used up ----------------------------------


async def test_a_failure_after_deferrals_that_cannot_be_read_is_retried() -> None:
    failing = FakeRuntime(RunResult("runtime_unavailable", detail="engine down"))
    slots, store = FakeSlots(unreadable=True), FakeStore()
    handler = handler_with(slots, failing, store, max_deliver=2, retry_delay_seconds=1.0)
    job = make_job()
    store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=4)
    await handler.handle(msg)
    assert msg.actions == [("nak", 1.0)]  # not taken for the last delivery
    assert record_of(store, job).status == "queued"


async def test_records_unavailable_after_deferrals_that_cannot_be_read_is_retried() -> None:
    slots, store = FakeSlots(unreadable=True), FakeStore()
    store.fail_reads = 1
    handler = handler_with(slots, FakeRuntime(), store, max_deliver=2, retry_delay_seconds=1.0)
    job = make_job()
    msg = FakeMsg(job.model_dump_json().encode(), delivered=5)
    await handler.handle(msg)
    assert msg.actions == [("nak", 1.0)]


async def test_the_consumers_own_last_delivery_gives_up_even_without_the_deferrals() -> None:
    failing = FakeRuntime(RunResult("runtime_unavailable", detail="engine down"))
    slots, store = FakeSlots(unreadable=True), FakeStore()
    handler = handler_with(slots, failing, store, max_deliver=2, fair_share_max_defer_seconds=10)
    job = make_job()
    store.seed(job.user_id, queued_record(job))
    last = handler.settings.consumer_max_deliver
    msg = FakeMsg(job.model_dump_json().encode(), delivered=last)
    await handler.handle(msg)
    assert msg.actions == [("ack", None)]
    assert (record_of(store, job).status, record_of(store, job).error) == (
        "failed",
        "runtime_unavailable",
    )


@pytest.mark.parametrize("status", ["queued", "running"])
async def test_a_job_whose_failed_deliveries_are_used_up_is_not_run_again(status: str) -> None:
    # Delivered 5 times, 1 of them handed back: the 3 failed deliveries allowed are used up
    # (their spawners died holding it); this one must not run it, nor adopt its container.
    adopted = RunResult("succeeded", exit_code=0, stdout=b"adopted\n")
    slots, runtime, store = FakeSlots(), FakeRuntime(adopted=adopted), FakeStore()
    handler = handler_with(slots, runtime, store, max_deliver=3)
    job = make_job()
    slots.deferred[job.execution_id] = 1
    store.seed(job.user_id, queued_record(job).model_copy(update={"status": status}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=5)
    await handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert runtime.specs == []
    assert (slots.admitted, slots.held) == ([], [])
    record = record_of(store, job)
    assert (record.status, record.error) == ("failed", "runtime_unavailable")
    assert str(record.detail).startswith("gave up after 3 attempts")


async def test_a_job_with_failed_deliveries_left_runs() -> None:
    slots, runtime, store = FakeSlots(), FakeRuntime(), FakeStore()
    handler = handler_with(slots, runtime, store, max_deliver=3)
    job = make_job()
    slots.deferred[job.execution_id] = 2
    store.seed(job.user_id, queued_record(job))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=5)
    await handler.handle(msg)
    assert msg.actions == [("ack", None)]
    assert record_of(store, job).status == "succeeded"


async def test_a_settled_redelivery_forgets_its_deferrals_and_a_first_delivery_writes_nothing() -> (
    None
):
    slots, runtime, store = FakeSlots(), FakeRuntime(), FakeStore()
    handler = handler_with(slots, runtime, store)
    first, again = make_job(), make_job()
    for job in (first, again):
        store.seed(job.user_id, queued_record(job))
    await handler.handle(FakeMsg(first.model_dump_json().encode(), delivered=1))
    await handler.handle(FakeMsg(again.model_dump_json().encode(), delivered=2))
    assert slots.forgotten == [again.execution_id]


async def test_a_terminated_redelivery_forgets_its_deferrals() -> None:
    slots, store = FakeSlots(), FakeStore()
    handler = handler_with(slots, FakeRuntime(), store)
    job = make_job()
    store.seed(job.user_id, queued_record(job).model_copy(update={"status": "succeeded"}))
    msg = FakeMsg(job.model_dump_json().encode(), delivered=3)
    await handler.handle(msg)
    assert msg.actions == [("term", None)]
    assert slots.forgotten == [job.execution_id]


async def test_a_handed_back_job_keeps_its_deferrals() -> None:
    slots, store = FakeSlots(allow=False), FakeStore()
    handler = handler_with(slots, FakeRuntime(), store)
    job = make_job()
    store.seed(job.user_id, queued_record(job))
    await handler.handle(FakeMsg(job.model_dump_json().encode(), delivered=2))
    assert slots.forgotten == []


# --- FairShare over a bucket ------------------------------------------------------------------


class FakeKv:
    """The calls ``FairShare`` makes on its bucket, in memory; ``broken``: every call fails."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, int]] = {}
        self.purged: list[str] = []
        self.broken = False
        self._revision = 0

    def _check(self) -> None:
        if self.broken:
            raise nats.errors.NoServersError

    async def get(self, key: str) -> SimpleNamespace:
        self._check()
        if key not in self.values:
            raise KeyNotFoundError
        value, revision = self.values[key]
        return SimpleNamespace(value=value, revision=revision)

    async def create(self, key: str, value: bytes) -> int:
        self._check()
        assert key not in self.values
        return self._put(key, value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        self._check()
        assert self.values[key][1] == last
        return self._put(key, value)

    async def purge(self, key: str) -> bool:
        self._check()
        self.purged.append(key)
        self.values.pop(key, None)
        return True

    def _put(self, key: str, value: bytes) -> int:
        self._revision += 1
        self.values[key] = (value, self._revision)
        return self._revision


class FakeStream:
    def __init__(self, in_flight: dict[str, int]) -> None:
        self.subjects = {f"{EXEC_SUBJECT_PREFIX}.{user}": n for user, n in in_flight.items()}

    async def stream_info(self, name: str, subjects_filter: str) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(subjects=self.subjects))


def fair_share(kv: FakeKv, *, capacity: int = 2, **settings: Any) -> FairShare:
    values = {"max_deliver": 3, "fair_share_max_defer_seconds": 10, "fair_share_delay_seconds": 1}
    return FairShare(
        make_settings(**(values | settings)),
        js=cast(JetStreamContext, FakeStream({"a": 5, "b": 1})),
        kv=cast(KeyValue, kv),
        capacity=lambda: capacity,
    )


def job_of(user: str) -> Job:
    return make_job().model_copy(update={"user_id": user})


async def test_a_job_over_its_share_is_deferred_and_its_deferrals_counted() -> None:
    kv = FakeKv()
    fair = fair_share(kv)
    fair.hold("a")
    job = job_of("a")
    assert not await fair.admit(job, 1)
    assert not await fair.admit(job, 2)
    assert await fair.deferrals(job.execution_id) == 2


async def test_a_job_is_never_deferred_into_the_consumers_last_deliveries() -> None:
    # max_deliver 3 of a consumer allowing 3 + 10 + 1: the 11th delivery is never deferred.
    kv = FakeKv()
    fair = fair_share(kv)
    fair.hold("a")
    job = job_of("a")
    assert fair.settings.consumer_max_deliver == 14
    assert not await fair.admit(job, 10)
    assert await fair.admit(job, 11)
    assert await fair.deferrals(job.execution_id) == 1


async def test_deferrals_that_cannot_be_read_are_unknown_not_zero() -> None:
    kv = FakeKv()
    fair = fair_share(kv)
    assert await fair.deferrals("exec-1") == 0
    kv.broken = True
    assert await fair.deferrals("exec-1") is None
    fair.hold("a")
    assert await fair.admit(job_of("a"), 1)  # the deferral cannot be counted: the job starts


async def test_forgetting_purges_the_count_and_never_fails() -> None:
    kv = FakeKv()
    fair = fair_share(kv)
    fair.hold("a")
    job = job_of("a")
    assert not await fair.admit(job, 1)
    await fair.forget(job.execution_id)
    assert kv.purged == [deferral_key(job.execution_id)]
    assert await fair.deferrals(job.execution_id) == 0
    kv.broken = True
    await fair.forget(job.execution_id)  # logged, not raised


# --- the load board ---------------------------------------------------------------------------


def load_entry(key: str, capacity: int, written_at: float, op: str | None = None) -> Any:
    load = SpawnerLoad(instance_id=key, capacity=capacity)
    return SimpleNamespace(
        key=key,
        value=b"" if op else load.model_dump_json().encode(),
        operation=op,
        created=datetime.fromtimestamp(written_at, UTC),
    )


def test_a_spawner_load_is_judged_by_when_it_was_written_not_when_it_arrived() -> None:
    now = 1_000_000.0
    board = LoadBoard(cast(KeyValue, FakeKv()), own_key="load.me", clock=lambda: now)
    snapshot = board.empty()
    board.apply_entry(snapshot, load_entry("load.old", 4, now - 10))
    board.apply_entry(snapshot, load_entry("load.new", 2, now - 1))
    board.apply_entry(snapshot, load_entry("load.me", 8, now))
    board.snapshot = snapshot
    assert [load.capacity for load in board.live(3.0)] == [2]
    board.apply_entry(board.snapshot, load_entry("load.new", 0, now, op="DEL"))
    assert board.live(3.0) == []
