"""Settings base shared by every service.

Shared variables keep their plain names (``NATS_URL``, ``DATABASE_URL``) through
``validation_alias``, so a service's ``env_prefix`` (``AUTH_``, ``REGISTRY_``) renames only the
fields it declares itself. Nothing reads the environment at import time: settings are built in the
app factory (or by tests, with keyword arguments).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from faas_common.images import DOCKER_HUB, ImagePolicy, parse_allow_prefixes, parse_registries
from faas_common.logging import LogFormat, parse_log_format
from faas_common.nats import DEFAULT_BUCKET_MAX_BYTES, RetryBudget

MIB = 1_048_576

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "postgres"})


class ConfigurationError(RuntimeError):
    """The settings cannot work; the message says which variable to set."""


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _alias(name: str) -> AliasChoices:
    # Accept the plain environment name and the field name (tests pass fields by keyword).
    return AliasChoices(name, name.lower())


def metrics_port_field(default: int, env_prefix: str) -> Any:
    """A service's ``metrics_port``: its own default, set by ``<PREFIX>METRICS_PORT`` or the
    shared ``METRICS_PORT``."""
    return Field(
        default,
        ge=0,
        le=65535,
        validation_alias=AliasChoices(f"{env_prefix}METRICS_PORT", "METRICS_PORT", "metrics_port"),
    )


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    environment: Literal["local", "production"] = Field(
        "production", validation_alias=_alias("ENVIRONMENT")
    )
    log_level: str = Field("INFO", validation_alias=_alias("LOG_LEVEL"))
    log_format: LogFormat = Field("auto", validation_alias=_alias("LOG_FORMAT"))
    """``json`` (one object per line), ``text`` (one readable line) or ``auto``: text when
    stderr is a terminal, JSON otherwise (``faas_common.logging``)."""
    database_url: str = Field(
        "sqlite+aiosqlite:///.data/faas.db", validation_alias=_alias("DATABASE_URL")
    )
    database_password_file: Path | None = Field(
        None, validation_alias=_alias("DATABASE_PASSWORD_FILE")
    )
    """A file holding the database password (a compose/swarm secret), put into DATABASE_URL."""
    nats_url: str = Field("nats://127.0.0.1:4222", validation_alias=_alias("NATS_URL"))
    nats_connect_timeout: float = Field(60.0, gt=0, validation_alias=_alias("NATS_CONNECT_TIMEOUT"))
    nats_replicas: int = Field(1, ge=1, le=5, validation_alias=_alias("NATS_REPLICAS"))
    nats_retry_seconds: float = Field(
        12.0, ge=0.1, le=120, validation_alias=_alias("NATS_RETRY_SECONDS")
    )
    """How long a JetStream request (a job publish, a record write) is retried before the
    call fails: longer than a leader election (4-7.5 s measured, budgeted for 10 s)."""
    nats_attempt_seconds: float = Field(
        2.5, gt=0, le=60, validation_alias=_alias("NATS_ATTEMPT_SECONDS")
    )
    """How long one attempt of such a request may take."""
    jwt_public_key_file: Path | None = Field(None, validation_alias=_alias("JWT_PUBLIC_KEY_FILE"))
    jwt_jwks_url: str | None = Field(None, validation_alias=_alias("JWT_JWKS_URL"))
    jwt_issuer: str = Field("faas-auth", validation_alias=_alias("JWT_ISSUER"))
    jwt_consumer_key: str = Field("faas-platform", validation_alias=_alias("JWT_CONSUMER_KEY"))
    max_body_bytes: int = Field(1_048_576, ge=1024, validation_alias=_alias("MAX_BODY_BYTES"))
    max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576, validation_alias=_alias("MAX_HEADER_BYTES")
    )
    """Largest request head (request line and headers, in total); larger ones answer 431."""
    request_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, validation_alias=_alias("REQUEST_TIMEOUT_SECONDS")
    )
    """Time a request's head and body have to arrive; a slower client gets 408 and is cut off."""
    keep_alive_seconds: float = Field(
        15.0, gt=0, le=3600, validation_alias=_alias("KEEP_ALIVE_SECONDS")
    )
    """How long an idle keep-alive connection stays open. Longer than the idle time of the
    connections the gateway keeps (10 s) and of httpx's pool (5 s), so neither sends a request
    on a connection the service is closing at that moment (the request would be lost)."""
    max_connections: int = Field(
        512, ge=1, le=1_000_000, validation_alias=_alias("MAX_CONNECTIONS")
    )
    """Open connections per process; one more is answered 503 and closed at once."""
    forwarded_allow_ips: str = Field("127.0.0.1", validation_alias=_alias("FORWARDED_ALLOW_IPS"))
    """Comma-separated addresses or networks of the proxies whose ``X-Forwarded-For`` is
    believed (empty: nobody's; ``*``: everybody's)."""
    max_in_flight: int = Field(100, ge=1, le=1_000_000, validation_alias=_alias("MAX_IN_FLIGHT"))
    """Cluster-wide limit of activations queued or running (the EXECUTIONS stream's max_msgs)."""
    max_in_flight_per_user: int = Field(
        20, ge=1, le=1_000_000, validation_alias=_alias("MAX_IN_FLIGHT_PER_USER")
    )
    """Per-user limit of activations queued or running (max_msgs_per_subject)."""
    execution_ttl_seconds: int = Field(
        86_400, ge=60, validation_alias=_alias("EXECUTION_TTL_SECONDS")
    )
    """How long execution records (and idempotency keys) are kept."""
    job_max_age_seconds: int = Field(3_600, ge=60, validation_alias=_alias("JOB_MAX_AGE_SECONDS"))
    """The ``EXECUTIONS`` stream's ``max_age``: a backstop that drops a job nobody settled (acked
    or terminated) after this long, so it cannot hold a concurrency slot forever."""
    stream_max_bytes: int = Field(256 * MIB, ge=4096, validation_alias=_alias("STREAM_MAX_BYTES"))
    """The ``EXECUTIONS`` stream's ``max_bytes`` (queued and running jobs): over it, a publish is
    refused like one over ``MAX_IN_FLIGHT`` (429)."""
    executions_max_bytes: int = Field(
        1024 * MIB, ge=4096, validation_alias=_alias("EXECUTIONS_MAX_BYTES")
    )
    """The ``executions`` bucket's ``max_bytes`` (execution records): when it is full, new
    activations are refused with 507 ``storage_full`` until records expire."""
    idempotency_max_bytes: int = Field(
        64 * MIB, ge=4096, validation_alias=_alias("IDEMPOTENCY_MAX_BYTES")
    )
    """The ``idempotency`` bucket's ``max_bytes``: when full, keyed calls are refused (507)."""
    functions_max_bytes: int = Field(
        256 * MIB, ge=4096, validation_alias=_alias("FUNCTIONS_MAX_BYTES")
    )
    """The ``functions`` bucket's ``max_bytes`` (the registry's read model)."""
    bucket_max_bytes: int = Field(
        DEFAULT_BUCKET_MAX_BYTES, ge=4096, validation_alias=_alias("BUCKET_MAX_BYTES")
    )
    """``max_bytes`` of every other bucket (``revocations``, ``fair_share``)."""
    metrics_port: int = Field(9100, ge=0, le=65535, validation_alias=_alias("METRICS_PORT"))
    """Port of this process's Prometheus ``/metrics``, a small server of its own beside the
    API, never routed by the gateway (0: none). Each service has its own default
    (``metrics_port_field``); the local stack serves ``/metrics`` on its API port instead."""
    metrics_host: str = Field(
        "0.0.0.0",  # noqa: S104 - reached on the internal network only, never published
        validation_alias=_alias("METRICS_HOST"),
    )
    metrics_function_labels: bool = Field(False, validation_alias=_alias("METRICS_FUNCTION_LABELS"))
    """Opt-in: label the activation metrics with the function's name (one series per function:
    mind the cardinality). User and execution ids are never labels."""

    @field_validator("jwt_jwks_url", "jwt_public_key_file", "database_password_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: object) -> object:
        return parse_log_format(value) if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        entries = _split_list(value)
        if "*" in entries and len(entries) > 1:
            raise ValueError("FORWARDED_ALLOW_IPS: '*' trusts everybody; list nothing else with it")
        for entry in entries:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry)
            except ValueError:
                raise ValueError(
                    f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or network"
                ) from None
        return value

    @property
    def trusted_proxies(self) -> tuple[str, ...]:
        """``FORWARDED_ALLOW_IPS`` as a list of addresses and networks."""
        return tuple(_split_list(self.forwarded_allow_ips))

    @property
    def retry_budget(self) -> RetryBudget:
        return RetryBudget(total=self.nats_retry_seconds, attempt=self.nats_attempt_seconds)

    @property
    def nats_servers(self) -> list[str]:
        """``NATS_URL`` may list several servers, comma-separated: clients get all of them."""
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @model_validator(mode="after")
    def _read_database_password_file(self) -> CommonSettings:
        # Runs before the placeholder check below (validators run in definition order).
        if self.database_password_file is None:
            return self
        from sqlalchemy.engine import make_url

        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite":
            raise ValueError("DATABASE_PASSWORD_FILE is set but DATABASE_URL is a SQLite URL")
        try:
            password = self.database_password_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"DATABASE_PASSWORD_FILE {self.database_password_file} cannot be read: {exc}"
            ) from exc
        password = password.rstrip("\r\n")
        if not password:
            raise ValueError(f"DATABASE_PASSWORD_FILE {self.database_password_file} is empty")
        self.database_url = url.set(password=password).render_as_string(hide_password=False)
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_database_password(self) -> CommonSettings:
        if self.environment != "local" and self.database_url.startswith("postgresql"):
            from sqlalchemy.engine import make_url

            password = make_url(self.database_url).password
            if password is not None and password.lower() in PLACEHOLDER_SECRETS:
                raise ValueError("DATABASE_URL uses a placeholder password outside the local stack")
        return self


class ImageSettings(BaseSettings):
    """The image policy (``faas_common.images``), read by registry-service and publisher-service.

    Lists are comma-separated; each entry is checked at start-up (a bad entry is a clear error).
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    image_policy: Literal["any", "namespaced"] = Field(
        "any", validation_alias=_alias("IMAGE_POLICY")
    )
    image_allow: str = Field("", validation_alias=_alias("IMAGE_ALLOW"))
    """Prefixes of normalised references every user may run (``docker.io/library/``)."""
    image_registries: str = Field("", validation_alias=_alias("IMAGE_REGISTRIES"))
    """Registries besides docker.io on which ``<username>/`` is the user's own namespace."""
    image_registry_allow: str = Field("", validation_alias=_alias("IMAGE_REGISTRY_ALLOW"))
    """Registry hosts (``host`` or ``host:port``) allowed although they are internal addresses."""

    @field_validator("image_allow", "image_registries", "image_registry_allow")
    @classmethod
    def _entries_are_valid(cls, value: str, info: ValidationInfo) -> str:
        parse = parse_allow_prefixes if info.field_name == "image_allow" else parse_registries
        parse(value)
        return value

    @property
    def images(self) -> ImagePolicy:
        return ImagePolicy(
            mode=self.image_policy,
            allow=parse_allow_prefixes(self.image_allow),
            registries=parse_registries(self.image_registries) | {DOCKER_HUB},
        )

    @property
    def registry_allow(self) -> frozenset[str]:
        return parse_registries(self.image_registry_allow)
