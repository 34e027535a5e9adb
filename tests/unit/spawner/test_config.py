"""Spawner settings: ``SPAWNER_*`` for its own, plain names for the shared ones."""

from __future__ import annotations

import os

import pytest

from spawner_service.config import SpawnerSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SPAWNER_"):
            monkeypatch.delenv(name)
    settings = SpawnerSettings()
    assert settings.max_containers == 4
    assert settings.output_limit_bytes == 1_048_576
    assert settings.log_tail_bytes == 8_192
    assert (settings.pids_limit, settings.cpus, settings.tmpfs_mb) == (64, 1.0, 64)
    assert (settings.ack_wait_seconds, settings.heartbeat_seconds, settings.max_deliver) == (
        30.0,
        10.0,
        3,
    )
    assert settings.allow_network is False
    assert settings.instance_id.endswith(f"-{os.getpid()}")


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
