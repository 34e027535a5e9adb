"""``python -m registry_service``: serve the app with uvicorn (settings from the environment)."""

from __future__ import annotations

from faas_common.http import serve
from registry_service.config import RegistrySettings
from registry_service.main import create_app


def main() -> None:
    settings = RegistrySettings()
    serve(
        create_app(settings),
        service="registry-service",
        host=settings.host,
        port=settings.port,
        settings=settings,
    )


if __name__ == "__main__":
    main()
