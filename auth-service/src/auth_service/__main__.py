"""``python -m auth_service``: serve the app with uvicorn (settings from the environment)."""

from __future__ import annotations

import uvicorn

from auth_service.config import AuthSettings
from auth_service.main import create_app
from faas_common.logging import configure_logging


def main() -> None:
    settings = AuthSettings()
    configure_logging("auth-service", settings.log_level)
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
