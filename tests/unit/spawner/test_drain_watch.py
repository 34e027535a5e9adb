"""FunctionChanges: which keys of the ``functions`` bucket count as changed (draining their
prewarmed containers), on the first load, on changes, and on a reload after a reconnect."""

from __future__ import annotations

from typing import cast

from nats.js.kv import KeyValue

from spawner_service.drain import FunctionChanges


def load(changes: FunctionChanges, entries: dict[str, bytes]) -> None:
    """A full load, as the watch does it: into a fresh snapshot, then installed."""
    fresh = changes.empty()
    for key, value in entries.items():
        changes.apply(fresh, key, value)
    changes.snapshot = fresh
    changes.installed()


def test_changes_and_deletions_drain_their_keys_and_a_reload_only_real_changes() -> None:
    seen: list[str] = []
    changes = FunctionChanges(cast(KeyValue, None), seen.append)
    load(changes, {"u.a": b"1", "u.b": b"1", "u.c": b"1"})
    seen.clear()  # the first load: nothing is parked yet, every key counts
    changes.apply(changes.snapshot, "u.a", b"2")
    changes.apply(changes.snapshot, "u.b", None)
    assert seen == ["u.a", "u.b"]
    seen.clear()
    # A reload after a reconnect: u.a unchanged, u.c gone without a delete marker, u.d new.
    load(changes, {"u.a": b"2", "u.d": b"1"})
    assert sorted(seen) == ["u.c", "u.d"]
