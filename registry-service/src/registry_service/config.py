"""registry-service settings: the shared ones plus ``REGISTRY_*``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from faas_common.settings import CommonSettings


class RegistrySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_", extra="ignore", populate_by_name=True)

    host: str = "0.0.0.0"  # noqa: S104 - a service in a container listens on every interface
    port: int = Field(8000, ge=1, le=65535)
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
