"""The prewarm pool's bookkeeping on a fake clock: how many containers each shape wants, the
global caps and evictions, idle shapes, drains and parks that land too late."""

from __future__ import annotations

import itertools
import socket
import threading
from typing import Any

import pytest

from spawner_service.runtime.base import RunSpec
from spawner_service.runtime.pool import PARK_SECONDS, RATE_WINDOW, Parked, Pool, Shape
from spawner_service.runtime.prewarm import _send_at_once, _send_blocking
from tests.unit.spawner.fakes import make_settings

IDLE = 120.0
SMALL = Shape("faas-test/small:1", (), 64)
OTHER = Shape("faas-test/other:1", (("MODE", "fast"),), 64)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_ids = itertools.count()


def pool_of(clock: Clock, **settings: Any) -> Pool:
    """A pool that parks for a shape from its first call on, unless ``settings`` say otherwise
    (the rules below hold for any ``pool_park_after_calls``; its own tests are further down)."""
    values: dict[str, Any] = {
        "pool_idle_seconds": IDLE,
        "pool_max_per_function": 4,
        "pool_park_after_calls": 1,
    }
    return Pool(make_settings(**(values | settings)), clock)


def parked(shape: Shape, at: float) -> Parked:
    return Parked(f"container-{next(_ids)}", shape, None, ["/bin/sh", "-c"], "sha256:1", at)


def refill(pool: Pool, clock: Clock) -> tuple[list[Parked], list[Parked]]:
    """Start what ``wanted`` asks for and land it at once: the landed parks and the evicted."""
    parks, evicted = pool.wanted()
    landed = []
    for shape, generation in parks:
        container = parked(shape, clock.now)
        assert pool.landed(container, generation, PARK_SECONDS)
        landed.append(container)
    return landed, evicted


def calls(pool: Pool, shape: Shape, count: int, function: str = "") -> None:
    """``count`` calls of ``shape`` in flight at once, then over."""
    for _ in range(count):
        pool.called(shape, function)
    for _ in range(count):
        pool.done(shape)


def shapes_of(parks: list[tuple[Shape, int]]) -> list[Shape]:
    return [shape for shape, _ in parks]


def test_the_shape_of_a_spec_is_its_image_sorted_env_and_memory() -> None:
    spec = RunSpec("e-1", "img:1", "arg", {"B": "2", "A": "1"}, 30, 128, 0.0, "alice/f")
    other = RunSpec("e-2", "img:1", "other arg", {"A": "1", "B": "2"}, 5, 128, 9.0, "bob/g")
    assert Shape.of(spec) == Shape.of(other) == Shape("img:1", (("A", "1"), ("B", "2")), 128)
    assert Shape.of(spec) != Shape.of(RunSpec("e-3", "img:1", "", {}, 30, 128, 0.0))


def test_nothing_is_wanted_before_a_call() -> None:
    pool = pool_of(Clock())
    assert pool.wanted() == ([], [])
    assert len(pool) == 0


def test_a_called_shape_wants_one_and_the_next_call_takes_it() -> None:
    clock = Clock()
    pool = pool_of(clock)
    assert pool.take(SMALL) is None  # a miss: the first call runs cold
    pool.done(SMALL)
    landed, _ = refill(pool, clock)
    assert [p.shape for p in landed] == [SMALL]
    assert pool.wanted() == ([], [])  # one is enough for one call at a time
    assert (pool.parked_of(SMALL), len(pool), list(pool)) == (1, 1, landed)
    assert pool.take(SMALL) == landed[0]
    assert pool.take(SMALL) is None
    assert pool.parked_of(SMALL) == 0


def test_by_default_a_shape_is_parked_for_from_its_second_call_on() -> None:
    clock = Clock()
    pool = Pool(make_settings(pool_idle_seconds=IDLE), clock)
    assert pool.settings.pool_park_after_calls == 2
    calls(pool, SMALL, 1)
    assert pool.wanted() == ([], [])  # called once: maybe never again
    clock.now += IDLE - 1
    calls(pool, SMALL, 1)
    assert shapes_of(pool.wanted()[0]) == [SMALL]


def test_calls_further_apart_than_the_idle_window_are_not_repeated_calls() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_park_after_calls=3)
    for _ in range(2):
        calls(pool, SMALL, 1)
        clock.now += IDLE / 2
    clock.now += 1  # the third call comes more than the idle window after the first
    calls(pool, SMALL, 1)
    assert pool.wanted() == ([], [])
    calls(pool, SMALL, 1)  # the last three are within the window of each other
    assert shapes_of(pool.wanted()[0]) == [SMALL]


def test_a_drained_shape_needs_its_repeated_calls_again() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_park_after_calls=2)
    for _ in range(2):
        calls(pool, SMALL, 1, function="alice/f")
    [(_, generation)] = pool.wanted()[0]
    pool.failed(SMALL, generation)
    pool.drain("alice/f")
    calls(pool, SMALL, 1, function="alice/f")
    assert pool.wanted() == ([], [])


def test_parks_under_way_count_towards_the_target() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1)
    parks, _ = pool.wanted()
    assert shapes_of(parks) == [SMALL]
    assert pool.wanted() == ([], [])


def test_the_target_is_the_peak_concurrency() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 3)
    landed, _ = refill(pool, clock)
    assert len(landed) == 3
    clock.now += IDLE / 2
    calls(pool, SMALL, 1)  # the peak of 3 is still in the window
    assert pool.wanted() == ([], [])
    assert pool.parked_of(SMALL) == 3


def test_the_peak_is_forgotten_after_the_idle_window() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 3)
    clock.now += IDLE + 1
    calls(pool, SMALL, 1)
    parks, _ = pool.wanted()
    assert shapes_of(parks) == [SMALL]


def test_the_target_follows_the_call_rate_times_the_park_time() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_per_function=16)
    pool.park_seconds = 2.0
    for _ in range(15):  # one at a time: a peak of 1, at 1.5 calls per second
        calls(pool, SMALL, 1)
        clock.now += RATE_WINDOW / 15
    clock.now -= 0.01
    landed, _ = refill(pool, clock)
    assert len(landed) == 3  # ceil(1.5/s x 2 s)


def test_calls_older_than_the_rate_window_do_not_count() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_per_function=16)
    pool.park_seconds = 2.0
    for _ in range(15):
        calls(pool, SMALL, 1)
    clock.now += RATE_WINDOW + 1
    calls(pool, SMALL, 1)
    landed, _ = refill(pool, clock)
    assert len(landed) == 1


def test_the_park_time_is_a_moving_average_of_the_measured_ones() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1)
    [(shape, generation)], _ = pool.wanted()
    assert pool.landed(parked(shape, clock.now), generation, PARK_SECONDS + 0.8)
    assert pool.park_seconds == pytest.approx(PARK_SECONDS + 0.1)


def test_a_shape_gets_at_most_the_per_function_cap() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_per_function=2)
    calls(pool, SMALL, 5)
    pool.park_seconds = 100.0
    landed, _ = refill(pool, clock)
    assert len(landed) == 2


def test_an_idle_shape_wants_none_and_its_parked_containers_expire() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 2)
    small, _ = refill(pool, clock)
    clock.now += IDLE - 10
    calls(pool, OTHER, 1)
    refill(pool, clock)
    clock.now += 11  # SMALL idle, OTHER called 11 s ago
    assert pool.wanted() == ([], [])
    assert sorted(p.container_id for p in pool.expired()) == sorted(p.container_id for p in small)
    assert (pool.parked_of(SMALL), pool.parked_of(OTHER), len(pool)) == (0, 1, 1)
    assert pool.expired() == []


def test_a_shape_with_a_call_in_flight_is_kept_while_idle() -> None:
    clock = Clock()
    pool = pool_of(clock)
    pool.called(SMALL)  # runs longer than the idle window
    clock.now += IDLE + 1
    assert pool.expired() == []
    pool.done(SMALL)
    assert pool.expired() == []
    assert pool.take(SMALL) is None  # called again: a shape as new
    pool.done(SMALL)
    assert shapes_of(pool.wanted()[0]) == [SMALL]


def test_a_parked_container_older_than_the_idle_window_is_not_taken_but_expired() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1)
    [old], _ = refill(pool, clock)
    for _ in range(3):  # the shape stays in use, its container does not
        clock.now += IDLE / 2
        calls(pool, SMALL, 1)
    assert pool.take(SMALL) is None
    pool.done(SMALL)
    assert pool.expired() == [old]
    assert pool.parked_of(SMALL) == 0
    landed, _ = refill(pool, clock)
    assert pool.take(SMALL) == landed[0]


def test_the_freshest_parked_container_is_taken_first() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 2)
    parks, _ = pool.wanted()
    old = parked(SMALL, clock.now)
    clock.now += 1
    fresh = parked(SMALL, clock.now)
    for container, (_, generation) in zip([old, fresh], parks, strict=True):
        assert pool.landed(container, generation, PARK_SECONDS)
    assert pool.take(SMALL) == fresh
    assert pool.take(SMALL) == old


def test_the_global_count_cap_and_no_eviction_of_a_more_recent_shape() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_parked=3)
    calls(pool, OTHER, 2)
    clock.now += 1
    calls(pool, SMALL, 2)  # SMALL is the more recent
    landed, evicted = refill(pool, clock)
    assert evicted == []
    assert sorted(p.shape.image for p in landed) == [OTHER.image, SMALL.image, SMALL.image]
    assert pool.wanted() == ([], [])  # OTHER wants one more but may not evict SMALL
    assert len(pool) == 3


def test_a_more_recent_shape_evicts_the_least_recently_called() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_parked=2)
    third = Shape("faas-test/third:1", (), 64)
    for shape in (OTHER, third):
        calls(pool, shape, 1)
        clock.now += 1
    landed, _ = refill(pool, clock)
    calls(pool, SMALL, 1)
    parks, evicted = pool.wanted()
    assert shapes_of(parks) == [SMALL]
    assert [p.shape for p in evicted] == [OTHER]  # called before `third`
    assert (pool.parked_of(OTHER), pool.parked_of(third)) == (0, 1)
    assert evicted == [p for p in landed if p.shape == OTHER]


def test_the_memory_cap() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_memory_mb=1000)
    big = Shape("faas-test/big:1", (), 400)
    calls(pool, big, 4)
    landed, _ = refill(pool, clock)
    assert len(landed) == 2


def test_a_more_recent_shape_evicts_for_memory() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_memory_mb=1000)
    big = Shape("faas-test/big:1", (), 900)
    calls(pool, OTHER, 4)
    refill(pool, clock)
    clock.now += 1
    calls(pool, big, 1)
    parks, evicted = pool.wanted()
    assert shapes_of(parks) == [big]
    assert [p.shape for p in evicted] == [OTHER] * 3  # 2 x 64 + 900 > 1000, 64 + 900 fits


def test_a_shape_over_the_memory_cap_is_never_parked_and_blocks_no_other() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_memory_mb=1000)
    huge = Shape("faas-test/huge:1", (), 2000)
    calls(pool, SMALL, 1)
    clock.now += 1
    calls(pool, huge, 1)  # the more recent
    parks, evicted = pool.wanted()
    assert (shapes_of(parks), evicted) == ([SMALL], [])


def test_nothing_is_evicted_for_a_park_that_does_not_fit_anyway() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_memory_mb=1000)
    big = Shape("faas-test/big:1", (), 950)
    calls(pool, OTHER, 1)
    refill(pool, clock)  # OTHER: 1 parked (64)
    clock.now += 1
    calls(pool, SMALL, 1)
    small_parks, _ = pool.wanted()  # SMALL: 1 under way (64), not evictable
    clock.now += 1
    calls(pool, big, 1)
    parks, evicted = pool.wanted()  # 64 + 950 > 1000 even without OTHER's
    assert (parks, evicted) == ([], [])
    assert pool.parked_of(OTHER) == 1
    assert shapes_of(small_parks) == [SMALL]


def test_a_park_landing_after_a_drain_is_refused_and_the_next_call_parks_again() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 3, "alice/echo")
    stale, _ = pool.wanted()
    assert pool.drain("alice/echo") == []
    for shape, generation in stale:
        assert not pool.landed(parked(shape, clock.now), generation, PARK_SECONDS)
    assert pool.parked_of(SMALL) == 0
    assert pool.wanted() == ([], [])  # its demand is forgotten until it is called again
    calls(pool, SMALL, 1, "alice/echo")
    [(_, fresh)], _ = pool.wanted()  # the peak of 3 is forgotten too
    assert fresh != generation
    assert pool.landed(parked(shape, clock.now), fresh, PARK_SECONDS)


def test_parks_from_before_a_drain_are_not_waited_for_but_hold_their_room() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_parked=3)
    calls(pool, SMALL, 3, "alice/echo")
    stale, _ = pool.wanted()
    assert pool.parking_of(SMALL) == 3
    pool.drain("alice/echo")
    # No call waits for them (they are removed when they land), but until then their
    # containers are on the engine: they count towards the caps.
    assert pool.parking_of(SMALL) == 0
    assert len(pool) == 3
    calls(pool, SMALL, 3, "alice/echo")
    assert pool.wanted() == ([], [])  # full
    (shape, generation), *rest = stale
    pool.failed(shape, generation)
    [(_, fresh)], _ = pool.wanted()
    assert fresh != generation
    assert pool.parking_of(SMALL) == 1
    for shape, generation in rest:
        assert not pool.landed(parked(shape, clock.now), generation, PARK_SECONDS)
    assert pool.parking_of(SMALL) == 1  # the fresh one's count untouched
    assert pool.landed(parked(SMALL, clock.now), fresh, PARK_SECONDS)
    assert (pool.parked_of(SMALL), pool.parking_of(SMALL)) == (1, 0)


def test_a_park_landing_once_its_shape_is_idle_is_refused() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1)
    [(shape, generation)], _ = pool.wanted()
    clock.now += IDLE + 1
    assert not pool.landed(parked(shape, clock.now), generation, PARK_SECONDS)
    assert len(pool) == 0
    assert pool.expired() == []
    assert pool.parked_of(SMALL) == 0


def test_a_failed_park_frees_its_reservation() -> None:
    clock = Clock()
    pool = pool_of(clock, pool_max_parked=1)
    calls(pool, SMALL, 1)
    [(shape, generation)], _ = pool.wanted()
    assert pool.wanted() == ([], [])
    assert len(pool) == 1  # the park under way
    pool.failed(shape, generation)
    assert len(pool) == 0
    assert shapes_of(pool.wanted()[0]) == [SMALL]


def test_a_drain_touches_only_the_shapes_the_function_was_called_with() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1, "alice/echo")
    calls(pool, OTHER, 1, "bob/other")
    calls(pool, OTHER, 1, "alice/echo")  # the same shape for two functions
    third = Shape("faas-test/third:1", (), 64)
    calls(pool, third, 1, "bob/third")
    landed, _ = refill(pool, clock)
    assert pool.drain("carol/none") == []
    drained = pool.drain("bob/other")
    assert drained == [p for p in landed if p.shape == OTHER]
    assert (pool.parked_of(SMALL), pool.parked_of(OTHER), pool.parked_of(third)) == (1, 0, 1)
    assert pool.drain("alice/echo") == [p for p in landed if p.shape == SMALL]
    assert (pool.parked_of(SMALL), pool.parked_of(third)) == (0, 1)


def test_drain_all_empties_the_pool_and_refuses_the_parks_under_way() -> None:
    clock = Clock()
    pool = pool_of(clock)
    calls(pool, SMALL, 1)
    calls(pool, OTHER, 2)
    landed, _ = refill(pool, clock)
    calls(pool, OTHER, 3)
    [(shape, generation)], _ = pool.wanted()
    assert sorted(p.container_id for p in pool.drain_all()) == sorted(
        p.container_id for p in landed
    )
    assert list(pool) == []
    assert pool.wanted() == ([], [])
    assert not pool.landed(parked(shape, clock.now), generation, PARK_SECONDS)
    assert len(pool) == 0


# --- the frame's sending ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 4 << 20], ids=["fits", "over-the-buffer"])
def test_a_frame_goes_whole_what_the_socket_takes_at_once_first(size: int) -> None:
    """The event loop sends what the socket takes without blocking; the thread pool the rest."""
    frame = (bytes(range(256)) * (size // 256 + 1))[:size]
    ours, engine = socket.socketpair()
    received = bytearray()

    def receive() -> None:
        while len(received) < len(frame) and (chunk := engine.recv(1 << 16)):
            received.extend(chunk)

    with ours, engine:
        sent = _send_at_once(ours, frame)
        reader = threading.Thread(target=receive)
        reader.start()
        _send_blocking(ours, frame[sent:])
        reader.join(timeout=30)
    assert 0 < sent <= len(frame)
    assert (sent == len(frame)) == (size == 64)
    assert bytes(received) == frame


def test_a_transport_that_is_no_socket_sends_nothing_at_once() -> None:
    assert _send_at_once(object(), b"frame") == 0
