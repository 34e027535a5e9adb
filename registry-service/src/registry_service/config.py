"""registry-service settings: the shared ones plus ``REGISTRY_*``."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from faas_common.settings import CommonSettings, ImageSettings, metrics_port_field


class RegistrySettings(CommonSettings, ImageSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore", populate_by_name=True)

    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = metrics_port_field(9102, "REGISTRY_")
    kv_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds a write to the functions KV bucket may take before the request fails.",
    )
    reconcile_interval_seconds: float = Field(
        300.0,
        ge=0,
        description="Seconds between two reconciliations of the functions KV bucket with the "
        "database while the service runs (0: only at start-up).",
    )
    max_functions_per_user: int = Field(
        100,
        ge=1,
        validation_alias=AliasChoices("MAX_FUNCTIONS_PER_USER", "max_functions_per_user"),
        description="Functions one user may have; the next create is a 403 quota_exceeded.",
    )
    max_env_bytes: int = Field(
        32_768,
        ge=0,
        description="Largest environment of one function: the UTF-8 bytes of NAME=value summed "
        "over its variables (422 env_too_large above it).",
    )
    resolve_timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description="How long resolving an image's registry host may take; a name that does not "
        "resolve within it is refused like an internal one.",
    )
