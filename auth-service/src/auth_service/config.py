"""auth-service settings: the shared ones plus ``AUTH_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from faas_common.settings import CommonSettings


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
    token_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
