"""``python -m auth_service``: serve the app with uvicorn (settings from the environment)."""

from __future__ import annotations

from auth_service.config import AuthSettings
from auth_service.main import create_app
from faas_common.http import serve


def main() -> None:
    settings = AuthSettings()
    serve(
        create_app(settings),
        service="auth-service",
        host=settings.host,
        port=settings.port,
        settings=settings,
    )


if __name__ == "__main__":
    main()
