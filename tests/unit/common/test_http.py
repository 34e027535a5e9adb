"""PlatformMiddleware (request id, body cap, JSON whatever the Content-Type) and the app factory."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel

from faas_common.health import health_router
from faas_common.http import PlatformMiddleware, create_service_app
from faas_common.logging import JsonFormatter, request_id_var

MAX_BODY = 2048
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


class Greeting(BaseModel):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/id")
    async def current_request_id() -> dict[str, str | None]:
        return {"request_id": request_id_var.get()}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        raw = await request.body()
        return {"content_type": request.headers.get("content-type"), "body": raw.decode()}

    @app.post("/greet")
    async def greet(body: Greeting) -> dict[str, str]:
        return {"hello": body.name}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    app.add_middleware(PlatformMiddleware, max_body_bytes=MAX_BODY)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


# --- Request id -------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["abc-123", "7f3a9c", "gw:1.2_3-x", "a" * 128])
async def test_valid_request_id_is_echoed_and_used_for_logging(
    client: httpx.AsyncClient, request_id: str
) -> None:
    response = await client.get("/id", headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    assert response.json() == {"request_id": request_id}


async def test_missing_request_id_is_generated(client: httpx.AsyncClient) -> None:
    first = await client.get("/id")
    second = await client.get("/id")
    generated = first.headers["x-request-id"]
    assert GENERATED_ID.match(generated)
    assert first.json() == {"request_id": generated}
    assert second.headers["x-request-id"] != generated


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("a" * 129, id="too-long"),
        pytest.param("<script>", id="markup"),
        pytest.param("id;rm -rf", id="semicolon"),
        pytest.param('quote"d', id="quote"),
    ],
)
async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, request_id: str) -> None:
    response = await client.get("/id", headers={"X-Request-ID": request_id})
    echoed = response.headers["x-request-id"]
    assert echoed != request_id
    assert GENERATED_ID.match(echoed)
    assert response.json() == {"request_id": echoed}


async def test_request_id_context_does_not_leak_after_the_request(
    client: httpx.AsyncClient,
) -> None:
    await client.get("/id", headers={"X-Request-ID": "leaky"})
    assert request_id_var.get() is None


async def test_errors_carry_the_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/missing", headers={"X-Request-ID": "on-a-404"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "on-a-404"


async def test_a_body_over_the_cap_carries_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/echo", content=b"x" * (MAX_BODY + 1), headers={"X-Request-ID": "too-big"}
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "too-big"


@pytest.fixture
def error_lines() -> Iterator[io.StringIO]:
    """What ``faas.http`` logs, as JSON lines (formatted while the request runs)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test"))
    http_logger = logging.getLogger("faas.http")
    http_logger.addHandler(handler)
    try:
        yield stream
    finally:
        http_logger.removeHandler(handler)


async def test_an_unexpected_error_is_a_500_with_the_request_id(
    client: httpx.AsyncClient, error_lines: io.StringIO
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "on-a-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    assert response.headers["x-request-id"] == "on-a-500"
    [logged] = [json.loads(line) for line in error_lines.getvalue().splitlines()]
    assert logged["request_id"] == "on-a-500"
    assert "RuntimeError: unexpected" in logged["exc"]


async def test_a_500_gets_a_generated_request_id_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert GENERATED_ID.match(response.headers["x-request-id"])


# --- JSON whatever the Content-Type -----------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        pytest.param("application/x-www-form-urlencoded", '{"name": "curl"}', id="curl-d"),
        pytest.param(None, '{"name": "curl"}', id="no-content-type"),
        pytest.param("text/plain", '{"name": "curl"}', id="text-plain"),
        pytest.param("application/octet-stream", '{"name": "curl"}', id="octet-stream"),
        pytest.param("text/plain", ' \n\t{"name": "curl"}', id="leading-whitespace"),
        pytest.param("text/plain", "[1, 2]", id="array"),
    ],
)
async def test_json_bodies_are_handed_on_as_json(
    client: httpx.AsyncClient, content_type: str | None, raw: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/echo", content=raw.encode(), headers=headers)
    assert response.json() == {"content_type": "application/json", "body": raw}


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        pytest.param("application/x-www-form-urlencoded", "a=1&b=2", id="real-form"),
        pytest.param("text/plain", "hello", id="plain-text"),
        pytest.param("application/json", '{"a": 1}', id="already-json"),
        pytest.param("application/json; charset=utf-8", '{"a": 1}', id="json-with-charset"),
        pytest.param("application/vnd.api+json", '{"a": 1}', id="json-suffix"),
    ],
)
async def test_other_bodies_keep_their_content_type(
    client: httpx.AsyncClient, content_type: str, raw: str
) -> None:
    response = await client.post(
        "/echo", content=raw.encode(), headers={"Content-Type": content_type}
    )
    assert response.json() == {"content_type": content_type, "body": raw}


async def test_json_model_route_works_with_curl_d(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/greet",
        content=b'{"name": "world"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}


async def test_streamed_body_is_reassembled(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"na', b'me": ', b'"chunked"}'):
            yield part

    response = await client.post("/greet", content=chunks())
    assert response.status_code == 200
    assert response.json() == {"hello": "chunked"}


# --- Body cap ---------------------------------------------------------------------------------


async def test_body_over_the_cap_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/echo", content=b"x" * (MAX_BODY + 1), headers={"X-Request-ID": "big-one"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "big-one"
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert str(MAX_BODY) in body["detail"]
    assert set(body) == {"detail", "code"}


async def test_body_at_the_cap_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/echo", content=b"x" * MAX_BODY)
    assert response.status_code == 200
    assert len(response.json()["body"]) == MAX_BODY


async def test_streamed_body_over_the_cap_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 512

    response = await client.post("/echo", content=chunks())
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_oversize_body_never_reaches_the_route() -> None:
    reached: list[bool] = []
    app = FastAPI()

    @app.post("/sink")
    async def sink(request: Request) -> None:
        reached.append(True)
        await request.body()

    app.add_middleware(PlatformMiddleware, max_body_bytes=1024)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post("/sink", content=b"z" * 1025)
    assert response.status_code == 413
    assert reached == []


# --- Access log -------------------------------------------------------------------------------


async def test_one_access_log_line_per_request(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="faas.access"):
        await client.post("/greet", json={"name": "log"}, headers={"X-Request-ID": "logged"})
    records = [record for record in caplog.records if record.name == "faas.access"]
    assert len(records) == 1
    record = records[0]
    assert record.__dict__["method"] == "POST"
    assert record.__dict__["path"] == "/greet"
    assert record.__dict__["status"] == 200
    assert record.__dict__["duration_ms"] >= 0


# --- App factory ------------------------------------------------------------------------------


@asynccontextmanager
async def _no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def service_app() -> FastAPI:
    router = APIRouter(prefix="/svc")

    @router.post("/things", status_code=201)
    async def create(body: Greeting) -> Greeting:
        return body

    return create_service_app(
        title="svc",
        prefix="/svc",
        lifespan=_no_lifespan,
        routers=[router, health_router("/svc", {})],
        max_body_bytes=1024,
    )


async def test_service_app_serves_docs_under_its_prefix() -> None:
    app = service_app()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert (await client.get("/svc/openapi.json")).status_code == 200
        assert (await client.get("/svc/docs")).status_code == 200
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/svc/health")).json() == {"status": "ok"}


async def test_service_app_has_the_middleware_and_error_shape() -> None:
    app = service_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        created = await client.post(
            "/svc/things",
            content=json.dumps({"name": "x"}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert created.status_code == 201
        assert created.headers["x-request-id"]
        invalid = await client.post("/svc/things", json={})
        assert invalid.status_code == 422
        assert invalid.json()["code"] == "validation_error"
        too_big = await client.post("/svc/things", content=b"{" + b" " * 2000 + b"}")
        assert too_big.status_code == 413
        assert too_big.json()["code"] == "payload_too_large"
