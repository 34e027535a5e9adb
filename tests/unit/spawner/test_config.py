"""Spawner settings: ``SPAWNER_*`` for its own, plain names for the shared ones."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from spawner_service.config import NATS_MAX_PAYLOAD, RECORD_ROOM, SpawnerSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPAWNER_"):
            monkeypatch.delenv(name)
    settings = SpawnerSettings()
    assert settings.max_containers == 4
    assert settings.output_limit_bytes == 524_288
    assert settings.log_tail_bytes == 8_192
    assert (settings.pids_limit, settings.cpus, settings.tmpfs_mb) == (64, 1.0, 64)
    assert (settings.ack_wait_seconds, settings.heartbeat_seconds, settings.max_deliver) == (
        30.0,
        10.0,
        3,
    )
    assert settings.allow_network is False
    assert settings.instance_id.endswith(f"-{os.getpid()}")
    assert settings.shm_bytes == 16 * 1_048_576
    assert (settings.pull_timeout_seconds, settings.pull_connect_seconds) == (300.0, 30.0)
    assert settings.image_sweep_days == 0  # off


def test_sandbox_and_pull_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWNER_SHM_BYTES", "1048576")
    monkeypatch.setenv("SPAWNER_PULL_CONNECT_SECONDS", "5")
    monkeypatch.setenv("SPAWNER_PULL_TIMEOUT_SECONDS", "60")
    monkeypatch.setenv("SPAWNER_IMAGE_SWEEP_DAYS", "14")
    settings = SpawnerSettings()
    assert settings.shm_bytes == 1_048_576
    assert (settings.pull_connect_seconds, settings.pull_timeout_seconds) == (5.0, 60.0)
    assert settings.image_sweep_days == 14
    with pytest.raises(ValidationError):
        SpawnerSettings(shm_bytes=0)


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWNER_MAX_CONTAINERS", "7")
    monkeypatch.setenv("SPAWNER_ALLOW_NETWORK", "true")
    monkeypatch.setenv("SPAWNER_NETWORK", "functions")
    monkeypatch.setenv("SPAWNER_STALE_AFTER_SECONDS", "5")
    monkeypatch.setenv("NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("MAX_IN_FLIGHT", "12")
    settings = SpawnerSettings()
    assert settings.max_containers == 7
    assert settings.allow_network is True
    assert settings.network == "functions"
    assert settings.stale_after_seconds == 5
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.max_in_flight == 12


def test_the_default_output_cap_leaves_room_for_json_escapes_and_logs() -> None:
    settings = SpawnerSettings()
    assert settings.output_limit_bytes + settings.log_tail_bytes <= NATS_MAX_PAYLOAD - RECORD_ROOM


@pytest.mark.parametrize(
    ("output", "tail"),
    [(1_048_576, 8_192), (NATS_MAX_PAYLOAD - RECORD_ROOM, 1), (8_192, 1_000_000)],
    ids=["one-mebibyte", "one-byte-over", "huge-log-tail"],
)
def test_output_and_log_tail_must_fit_one_nats_message(output: int, tail: int) -> None:
    with pytest.raises(ValidationError, match="SPAWNER_OUTPUT_LIMIT_BYTES"):
        SpawnerSettings(output_limit_bytes=output, log_tail_bytes=tail)


def test_output_and_log_tail_may_fill_the_room_exactly() -> None:
    room = NATS_MAX_PAYLOAD - RECORD_ROOM
    settings = SpawnerSettings(output_limit_bytes=room - 8_192, log_tail_bytes=8_192)
    assert settings.output_limit_bytes == room - 8_192


@pytest.mark.parametrize(
    ("heartbeat", "ack_wait"), [(15.0, 30.0), (20.0, 30.0), (30.0, 30.0), (60.0, 30.0)]
)
def test_the_heartbeat_must_be_below_half_the_ack_wait(heartbeat: float, ack_wait: float) -> None:
    with pytest.raises(ValidationError, match="SPAWNER_HEARTBEAT_SECONDS"):
        SpawnerSettings(heartbeat_seconds=heartbeat, ack_wait_seconds=ack_wait)


def test_a_heartbeat_below_half_the_ack_wait_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWNER_HEARTBEAT_SECONDS", "14.9")
    monkeypatch.setenv("SPAWNER_ACK_WAIT_SECONDS", "30")
    settings = SpawnerSettings()
    assert (settings.heartbeat_seconds, settings.ack_wait_seconds) == (14.9, 30.0)
