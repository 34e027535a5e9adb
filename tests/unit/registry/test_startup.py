"""Start-up: token verification must be configured; a public key file or a JWKS URL works."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from faas_common.security import load_public_key, public_jwk
from faas_common.settings import ConfigurationError
from registry_service.config import RegistrySettings
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    client_for,
    function_body,
    make_settings,
    make_user,
    running_app,
)


async def test_startup_without_any_verification_key_fails_clearly(
    sqlite_database_url: str,
) -> None:
    settings = make_settings(sqlite_database_url, Path("unused"), jwt_public_key_file=None)

    with pytest.raises(ConfigurationError, match="JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL"):
        async with running_app(settings, FakeCatalog()):
            pass


async def test_startup_with_a_missing_key_file_fails_clearly(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(sqlite_database_url, tmp_path / "nope.pem")

    with pytest.raises(ConfigurationError, match=r"nope\.pem"):
        async with running_app(settings, FakeCatalog()):
            pass


def test_settings_read_the_environment(
    monkeypatch: pytest.MonkeyPatch, rsa_keys: RsaKeys, tmp_path: Path
) -> None:
    monkeypatch.setenv("REGISTRY_PORT", "9001")
    monkeypatch.setenv("REGISTRY_KV_TIMEOUT", "2.5")
    monkeypatch.setenv("REGISTRY_RECONCILE_INTERVAL_SECONDS", "30")
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("JWT_PUBLIC_KEY_FILE", str(rsa_keys.public_path))

    settings = RegistrySettings()

    assert settings.port == 9001
    assert settings.host == "0.0.0.0"  # noqa: S104 - the documented default
    assert settings.kv_timeout == 2.5
    assert settings.reconcile_interval_seconds == 30
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222"]
    assert settings.jwt_public_key_file == rsa_keys.public_path
    assert settings.database_url.endswith("r.db")


def test_reconcile_interval_defaults_to_five_minutes(rsa_keys: RsaKeys, tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", rsa_keys.public_path)

    assert settings.reconcile_interval_seconds == 300


@pytest.fixture
def jwks_url(rsa_keys: RsaKeys) -> Iterator[str]:
    """A loopback HTTP server answering the JWKS of ``rsa_keys`` (as auth-service does)."""
    body = json.dumps({"keys": [public_jwk(load_public_key(rsa_keys.public_pem))]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/auth/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_tokens_verified_with_a_jwks_url(
    sqlite_database_url: str, rsa_keys: RsaKeys, jwks_url: str
) -> None:
    settings = make_settings(
        sqlite_database_url, Path("unused"), jwt_public_key_file=None, jwt_jwks_url=jwks_url
    )
    user = make_user(rsa_keys.private_pem, "carol")

    async with running_app(settings, FakeCatalog()) as app, client_for(app) as client:
        created = await client.post(
            "/registry/functions", json=function_body(), headers=user.headers
        )
        anonymous = await client.get("/registry/functions")

    assert created.status_code == 201, created.text
    assert anonymous.status_code == 401


async def test_openapi_lives_under_the_prefix(client: httpx.AsyncClient) -> None:
    response = await client.get("/registry/openapi.json")

    assert response.status_code == 200
    assert response.json()["info"]["title"] == "registry-service"
