"""``python -m publisher_service``: serve the app with uvicorn (settings from the environment)."""

from __future__ import annotations

from faas_common.http import serve
from publisher_service.config import PublisherSettings
from publisher_service.main import SERVICE, create_app


def main() -> None:
    settings = PublisherSettings()
    serve(
        create_app(settings),
        service=SERVICE,
        host=settings.host,
        port=settings.port,
        settings=settings,
    )


if __name__ == "__main__":
    main()
