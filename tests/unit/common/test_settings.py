"""Shared settings: plain environment names, server lists, placeholder secrets refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_service.config import AuthSettings
from faas_common.settings import CommonSettings

SHARED_NAMES = (
    "ENVIRONMENT",
    "LOG_LEVEL",
    "DATABASE_URL",
    "NATS_URL",
    "NATS_CONNECT_TIMEOUT",
    "NATS_REPLICAS",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_JWKS_URL",
    "JWT_ISSUER",
    "JWT_CONSUMER_KEY",
    "MAX_BODY_BYTES",
    "JOB_MAX_AGE_SECONDS",
)
AUTH_NAMES = ("AUTH_PRIVATE_KEY_FILE", "AUTH_GENERATE_KEYS", "AUTH_TOKEN_TTL_SECONDS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*SHARED_NAMES, *AUTH_NAMES, "AUTH_NATS_URL", "AUTH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_without_environment() -> None:
    settings = CommonSettings()
    assert settings.environment == "production"
    assert settings.nats_servers == ["nats://127.0.0.1:4222"]
    assert settings.max_body_bytes == 1_048_576
    assert settings.jwt_public_key_file is None
    assert settings.jwt_jwks_url is None


def test_plain_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://nats-1:4222")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://faas:s3cret-pw@db:5432/faas")
    monkeypatch.setenv("ENVIRONMENT", "local")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("NATS_REPLICAS", "3")
    monkeypatch.setenv("JWT_JWKS_URL", "http://auth-service:8081/auth/.well-known/jwks.json")
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", "/run/secrets/jwt-public.pem")
    monkeypatch.setenv("MAX_BODY_BYTES", "4096")
    settings = CommonSettings()
    assert settings.nats_url == "nats://nats-1:4222"
    assert settings.database_url == "postgresql+asyncpg://faas:s3cret-pw@db:5432/faas"
    assert settings.environment == "local"
    assert settings.log_level == "DEBUG"
    assert settings.nats_replicas == 3
    assert settings.jwt_jwks_url == "http://auth-service:8081/auth/.well-known/jwks.json"
    assert settings.jwt_public_key_file == Path("/run/secrets/jwt-public.pem")
    assert settings.max_body_bytes == 4096


def test_service_prefix_applies_to_its_own_fields_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://plain:4222")
    monkeypatch.setenv("AUTH_NATS_URL", "nats://prefixed:4222")
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///plain.db")
    monkeypatch.setenv("AUTH_TOKEN_TTL_SECONDS", "120")
    monkeypatch.setenv("AUTH_PRIVATE_KEY_FILE", "/run/secrets/jwt-private.pem")
    monkeypatch.setenv("AUTH_GENERATE_KEYS", "true")
    settings = AuthSettings()
    assert settings.nats_url == "nats://plain:4222"
    assert settings.database_url == "sqlite+aiosqlite:///plain.db"
    assert settings.token_ttl_seconds == 120
    assert settings.private_key_file == Path("/run/secrets/jwt-private.pem")
    assert settings.generate_keys is True


def test_the_job_max_age_is_an_hour_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CommonSettings().job_max_age_seconds == 3600
    monkeypatch.setenv("JOB_MAX_AGE_SECONDS", "60")
    assert CommonSettings().job_max_age_seconds == 60
    monkeypatch.setenv("JOB_MAX_AGE_SECONDS", "7200")
    assert AuthSettings().job_max_age_seconds == 7200  # a plain name, whatever the prefix


def test_keyword_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://from-env:4222")
    settings = CommonSettings(nats_url="nats://from-test:4222")
    assert settings.nats_url == "nats://from-test:4222"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nats://a:4222", ["nats://a:4222"]),
        (
            "nats://a:4222,nats://b:4222,nats://c:4222",
            ["nats://a:4222", "nats://b:4222", "nats://c:4222"],
        ),
        (" nats://a:4222 , nats://b:4222 ,", ["nats://a:4222", "nats://b:4222"]),
        ("nats://a:4222,,nats://b:4222", ["nats://a:4222", "nats://b:4222"]),
    ],
)
def test_nats_servers_splits_the_url_list(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("NATS_URL", value)
    assert CommonSettings().nats_servers == expected


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_JWKS_URL", "")
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", "")
    settings = CommonSettings()
    assert settings.jwt_jwks_url is None
    assert settings.jwt_public_key_file is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NATS_REPLICAS", "0"),
        ("NATS_REPLICAS", "7"),
        ("NATS_CONNECT_TIMEOUT", "0"),
        ("MAX_BODY_BYTES", "10"),
        ("ENVIRONMENT", "staging"),
        ("JOB_MAX_AGE_SECONDS", "59"),
    ],
)
def test_out_of_range_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        CommonSettings()


@pytest.mark.parametrize(
    "password", ["changeme", "change-me", "secret", "password", "postgres", "CHANGEME"]
)
def test_placeholder_database_password_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql+asyncpg://faas:{password}@db:5432/faas")
    with pytest.raises(ValidationError, match="placeholder password"):
        CommonSettings()
    with pytest.raises(ValidationError, match="placeholder password"):
        AuthSettings(environment="production")


def test_placeholder_database_password_is_accepted_locally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://faas:changeme@127.0.0.1/faas")
    monkeypatch.setenv("ENVIRONMENT", "local")
    assert CommonSettings().environment == "local"


def test_real_database_password_is_accepted_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://faas:Zq8-long-random@db:5432/faas")
    assert CommonSettings().environment == "production"


def test_sqlite_has_no_password_to_check() -> None:
    settings = CommonSettings(database_url="sqlite+aiosqlite:///data/faas.db")
    assert settings.environment == "production"


def test_auth_settings_bounds_the_token_lifetime() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(token_ttl_seconds=10)
    with pytest.raises(ValidationError):
        AuthSettings(token_ttl_seconds=8 * 24 * 3600)
    assert AuthSettings(token_ttl_seconds=60).token_ttl_seconds == 60
