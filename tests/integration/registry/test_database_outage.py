"""A database outage is a 503 ``service_unavailable``, never a 500, and the service recovers.

PostgreSQL is reached through a loopback proxy the test cuts: connections die and reconnecting
is refused, as when the server goes away.
"""

from __future__ import annotations

import httpx
from sqlalchemy.engine import make_url

from tests.integration.registry.tcp_proxy import tcp_proxy
from tests.support.keys import RsaKeys
from tests.unit.registry.factories import (
    FakeCatalog,
    User,
    client_for,
    function_body,
    make_settings,
    running_app,
)


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "service_unavailable"


async def test_postgres_outage_is_a_503_and_the_service_recovers(
    postgres_database_url: str, rsa_keys: RsaKeys, alice: User
) -> None:
    url = make_url(postgres_database_url)
    async with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        settings = make_settings(proxied, rsa_keys.public_path)
        catalog = FakeCatalog()
        async with running_app(settings, catalog) as app, client_for(app) as client:
            created = await client.post(
                "/registry/functions", json=function_body(), headers=alice.headers
            )
            assert created.status_code == 201, created.text

            await proxy.cut()
            listed = await client.get("/registry/functions", headers=alice.headers)
            fetched = await client.get("/registry/functions/hello", headers=alice.headers)
            posted = await client.post(
                "/registry/functions", json=function_body("other"), headers=alice.headers
            )
            patched = await client.patch(
                "/registry/functions/hello", json={"memory_mb": 64}, headers=alice.headers
            )
            deleted = await client.delete("/registry/functions/hello", headers=alice.headers)
            ready = await client.get("/registry/ready")
            await proxy.restore()

            for response in (listed, fetched, posted, patched, deleted):
                assert_unavailable(response)
            assert ready.status_code == 503
            assert ready.json()["checks"]["nats"] == "ok"
            assert list(catalog.entries) == [f"{alice.id}.hello"]

            again = await client.get("/registry/functions", headers=alice.headers)
            assert again.status_code == 200, again.text
            assert again.json() == [created.json()]
