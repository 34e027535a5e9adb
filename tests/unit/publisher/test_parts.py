"""The pieces under the routes: reply routing, settings, start-up configuration."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from faas_common.contract import ExecutionRecord
from faas_common.settings import ConfigurationError
from publisher_service.config import PublisherSettings
from publisher_service.exceptions import RuntimeUnavailable
from publisher_service.replies import ReplyRegistry
from publisher_service.service import fingerprint
from tests.support.keys import RsaKeys
from tests.unit.publisher.factories import fake_backends, make_settings, running_app


def finished(execution_id: str, result: str = "ok") -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        function="f",
        status="succeeded",
        result=result,
        created_at=time.time(),
    )


def reply(subject: str, data: bytes) -> Msg:
    return Msg(_client=None, subject=subject, data=data)  # type: ignore[arg-type]


async def test_every_waiter_of_an_execution_gets_its_reply() -> None:
    registry = ReplyRegistry("one")
    first, second = registry.expect("e1"), registry.expect("e1")
    other = registry.expect("e2")

    await registry.handle(reply("faas.reply.one.e1", finished("e1").model_dump_json().encode()))

    assert (await first).result == (await second).result == "ok"
    assert not other.done()
    assert registry.waiting == 1


async def test_malformed_or_mismatched_replies_are_ignored() -> None:
    registry = ReplyRegistry("one")
    waiting = registry.expect("e1")

    await registry.handle(reply("faas.reply.one.e1", b"not json"))
    await registry.handle(reply("faas.reply.one.e1", finished("e2").model_dump_json().encode()))

    assert not waiting.done()
    assert registry.subject("e1") == "faas.reply.one.e1"
    assert registry.wildcard == "faas.reply.one.*"


async def test_forgotten_waiters_are_dropped_and_close_fails_the_rest() -> None:
    registry = ReplyRegistry("one")
    dropped = registry.expect("e1")
    kept = registry.expect("e2")
    registry.forget("e1", dropped)

    assert registry.deliver(finished("e1")) == 0
    registry.close()

    with pytest.raises(RuntimeUnavailable):
        await kept
    with pytest.raises(RuntimeUnavailable):
        await registry.expect("e3")
    assert registry.waiting == 0


def test_fingerprint_tells_requests_apart() -> None:
    base = fingerprint("f", "x", False)

    assert fingerprint("f", "x", False) == base
    assert len({base, fingerprint("g", "x", False), fingerprint("f", "y", False)}) == 3
    assert fingerprint("f", "x", True) != base
    # No ambiguity from concatenation.
    assert fingerprint("ab", "c", False) != fingerprint("a", "bc", False)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, rsa_keys: RsaKeys) -> None:
    monkeypatch.setenv("PUBLISHER_PORT", "9002")
    monkeypatch.setenv("PUBLISHER_QUEUE_TIMEOUT_SECONDS", "12.5")
    monkeypatch.setenv("PUBLISHER_INSTANCE_ID", "pub-1")
    monkeypatch.setenv("PUBLISHER_HISTORY_LIMIT", "50")
    monkeypatch.setenv("MAX_IN_FLIGHT", "7")
    monkeypatch.setenv("MAX_IN_FLIGHT_PER_USER", "3")
    monkeypatch.setenv("EXECUTION_TTL_SECONDS", "3600")
    monkeypatch.setenv("NATS_URL", "nats://a:4222,nats://b:4222")
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", str(rsa_keys.public_path))

    settings = PublisherSettings()

    assert settings.port == 9002
    assert settings.queue_timeout_seconds == 12.5
    assert settings.async_queue_timeout_seconds == 300
    assert settings.reply_grace_seconds == 10
    assert settings.max_argument_bytes == 131_071
    assert settings.instance_id == "pub-1"
    assert settings.history_limit == 50
    assert settings.max_in_flight == 7
    assert settings.max_in_flight_per_user == 3
    assert settings.execution_ttl_seconds == 3600
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]


def test_settings_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_IN_FLIGHT", "MAX_IN_FLIGHT_PER_USER", "PUBLISHER_INSTANCE_ID"):
        monkeypatch.delenv(name, raising=False)
    first, second = PublisherSettings(), PublisherSettings()

    assert first.max_in_flight == 100
    assert first.max_in_flight_per_user == 20
    assert first.history_limit == 20
    assert first.instance_id != second.instance_id  # a random instance id each

    for invalid in (
        {"instance_id": "a.b"},
        {"history_limit": 101},
        {"max_argument_bytes": 131_072},
        {"queue_timeout_seconds": 0},
    ):
        with pytest.raises(ValueError, match="validation error"):
            PublisherSettings(**invalid)


async def test_startup_without_any_verification_key_fails_clearly() -> None:
    settings = make_settings(Path("unused"), jwt_public_key_file=None)

    with pytest.raises(ConfigurationError, match="JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL"):
        async with running_app(settings, fake_backends().backends()):
            pass


async def test_startup_with_a_missing_key_file_fails_clearly(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "nope.pem")

    with pytest.raises(ConfigurationError, match=r"nope\.pem"):
        async with running_app(settings, fake_backends().backends()):
            pass
