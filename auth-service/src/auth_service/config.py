"""auth-service settings: the shared ones plus ``AUTH_*``."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from auth_service.throttle import ThrottlePolicy
from faas_common.contract import MAX_TOKEN_TTL_SECONDS
from faas_common.settings import CommonSettings, metrics_port_field


class AuthSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", populate_by_name=True)

    private_key_file: Path = Field(
        Path(".data/keys/jwt-private.pem"),
        description="PEM RSA private key that signs tokens (only auth-service holds it).",
    )
    generate_keys: bool = Field(
        False,
        description="Create the key pair at private_key_file if it is missing (local stack).",
    )
    token_ttl_seconds: int = Field(
        3600,
        ge=60,
        le=MAX_TOKEN_TTL_SECONDS,
        description="Token lifetime; the revocations bucket keeps entries this long plus 5 min.",
    )
    hash_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="Password hashes (argon2) computed at once; more requests wait their turn.",
    )
    login_max_failures: int = Field(
        10, ge=1, le=10, description="Login attempts per window after which an account locks."
    )
    login_failure_window_seconds: float = Field(60.0, ge=1, le=3600)
    login_lockout_seconds: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="The first lockout; each one in a row lasts twice as long.",
    )
    login_lockout_max_seconds: float = Field(3600.0, ge=1, le=86_400)
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = metrics_port_field(9101, "AUTH_")

    @model_validator(mode="after")
    def _lockouts_in_order(self) -> AuthSettings:
        if self.login_lockout_max_seconds < self.login_lockout_seconds:
            raise ValueError(
                "AUTH_LOGIN_LOCKOUT_MAX_SECONDS is shorter than AUTH_LOGIN_LOCKOUT_SECONDS"
            )
        return self

    @property
    def throttle(self) -> ThrottlePolicy:
        return ThrottlePolicy(
            max_failures=self.login_max_failures,
            window=self.login_failure_window_seconds,
            lockout=self.login_lockout_seconds,
            lockout_max=self.login_lockout_max_seconds,
        )
