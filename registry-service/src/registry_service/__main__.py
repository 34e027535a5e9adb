"""``python -m registry_service``: serve the app with uvicorn (settings from the environment)."""

from __future__ import annotations

import uvicorn

from faas_common.logging import configure_logging
from registry_service.config import RegistrySettings
from registry_service.main import create_app


def main() -> None:
    settings = RegistrySettings()
    configure_logging("registry-service", settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips="*",
    )


if __name__ == "__main__":
    main()
