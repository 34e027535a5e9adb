"""One error shape: every ServiceError, validation error, HTTP error and crash renders as JSON."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from http import HTTPStatus

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, OperationalError

from faas_common.errors import (
    BadGateway,
    BadRequest,
    Conflict,
    DependencyUnavailable,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    error_body,
    install_error_handlers,
)


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    size: int


class TeapotError(ServiceError):
    status_code = 418
    code = "teapot"
    detail = "I am a teapot"


ERRORS: dict[str, ServiceError] = {}


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_named(name: str) -> None:
        raise ERRORS[name]

    @app.post("/items")
    async def create_item(item: Item) -> Item:
        return item

    @app.get("/http/{status}")
    async def raise_http(status: int) -> None:
        raise HTTPException(status_code=status, detail="from HTTPException")

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # Starlette re-raises unhandled errors after answering: keep them out of the test.
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def raised(client: httpx.AsyncClient, error: ServiceError) -> httpx.Response:
    name = f"e{len(ERRORS)}"
    ERRORS[name] = error
    return await client.get(f"/raise/{name}")


@pytest.mark.parametrize(
    ("error_type", "status", "code"),
    [
        (BadRequest, 400, "bad_request"),
        (Unauthorized, 401, "unauthorized"),
        (BadGateway, 502, "bad_gateway"),
        (NotFound, 404, "not_found"),
        (Conflict, 409, "conflict"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (TooManyRequests, 429, "too_many_requests"),
        (DependencyUnavailable, 503, "service_unavailable"),
        (GatewayTimeout, 504, "timed_out"),
        (TeapotError, 418, "teapot"),
    ],
)
async def test_service_errors_render_detail_and_code(
    client: httpx.AsyncClient, error_type: type[ServiceError], status: int, code: str
) -> None:
    response = await raised(client, error_type())
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": error_type.detail, "code": code}


async def test_detail_and_code_can_be_overridden(client: httpx.AsyncClient) -> None:
    response = await raised(client, NotFound("No function 'hello'", code="function_not_found"))
    assert response.status_code == 404
    assert response.json() == {"detail": "No function 'hello'", "code": "function_not_found"}


async def test_extra_body_fields_are_kept(client: httpx.AsyncClient) -> None:
    error = ServiceError("Function failed", code="function_failed", body={"exit_code": 3})
    error.status_code = 502
    response = await raised(client, error)
    assert response.status_code == 502
    assert response.json() == {
        "detail": "Function failed",
        "code": "function_failed",
        "exit_code": 3,
    }


class SlowDown(TooManyRequests):
    retry_after = 7


async def test_dependency_unavailable_carries_retry_after(client: httpx.AsyncClient) -> None:
    response = await raised(client, DependencyUnavailable())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"


async def test_too_many_requests_carries_retry_after(client: httpx.AsyncClient) -> None:
    response = await raised(client, TooManyRequests("Slow down", code="concurrency_limit"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    response = await raised(client, SlowDown(code="concurrency_limit"))
    assert response.headers["retry-after"] == "7"
    assert response.json() == {"detail": "Too many requests", "code": "concurrency_limit"}


async def test_unauthorized_carries_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await raised(client, Unauthorized("Token expired", code="token_expired"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "Token expired", "code": "token_expired"}


async def test_custom_headers_are_sent(client: httpx.AsyncClient) -> None:
    response = await raised(client, ServiceError(headers={"X-Extra": "yes"}))
    assert response.status_code == 500
    assert response.headers["x-extra"] == "yes"
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}


def test_an_instance_does_not_change_its_class() -> None:
    NotFound("one thing", code="thing_not_found")
    assert NotFound.detail == "Not found"
    assert NotFound.code == "not_found"
    assert str(NotFound("shown")) == "shown"


def test_error_body_shape() -> None:
    assert error_body("x", "y") == {"detail": "x", "code": "y"}
    assert error_body("x", "y", status="queued") == {"detail": "x", "code": "y", "status": "queued"}


async def test_validation_error_keeps_fastapis_list(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "", "size": "big"})
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "validation_error"
    locations = {tuple(error["loc"]) for error in body["detail"]}
    assert locations == {("body", "name"), ("body", "size")}
    for error in body["detail"]:
        assert {"type", "loc", "msg", "input"} <= set(error)
        assert "url" not in error


async def test_validation_error_truncates_huge_inputs(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "n" * 5000, "size": 1})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["input"].startswith("n" * 256)
    assert len(error["input"]) <= 260


async def test_validation_error_for_path_parameters(client: httpx.AsyncClient) -> None:
    response = await client.get("/http/not-a-number")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "status"]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (403, "forbidden"),
        (418, "im_a_teapot"),
        (503, "service_unavailable"),
        (599, "http_error"),
    ],
)
async def test_http_exceptions_get_a_code_from_their_status(
    client: httpx.AsyncClient, status: int, code: str
) -> None:
    response = await client.get(f"/http/{status}")
    assert response.status_code == status
    assert response.json() == {"detail": "from HTTPException", "code": code}


@pytest.mark.parametrize("status", [s.value for s in HTTPStatus if s.value >= 400])
async def test_every_http_status_gets_a_snake_case_code(
    client: httpx.AsyncClient, status: int
) -> None:
    response = await client.get(f"/http/{status}")
    assert response.status_code == status
    assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", response.json()["code"])


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    missing = await client.get("/missing")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found", "code": "not_found"}
    wrong_method = await client.delete("/items")
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"detail": "Method Not Allowed", "code": "method_not_allowed"}


async def test_unexpected_error_is_a_logged_json_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="faas.errors"):
        response = await client.get("/crash")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    assert "secret internals" not in response.text
    records = [record for record in caplog.records if record.name == "faas.errors"]
    assert records
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


def dependency_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{kind}")
    async def fail(kind: str) -> None:
        if kind == "operational":
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
        if kind == "too-many":
            raise DBAPIError("SELECT 1", {}, Exception("sorry, too many clients already"))
        if kind == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if kind == "integrity-like":
            raise DBAPIError("INSERT", {}, Exception("value violates a check"))
        raise AssertionError(kind)

    return app


@pytest.mark.parametrize("kind", ["operational", "too-many", "refused"])
async def test_a_lost_dependency_is_a_503(kind: str) -> None:
    transport = httpx.ASGITransport(app=dependency_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get(f"/raise/{kind}")
    assert response.status_code == 503
    assert response.json() == {
        "detail": "A dependency of this service is unavailable",
        "code": "service_unavailable",
    }
    assert response.headers["retry-after"] == "2"


async def test_other_database_errors_stay_500s() -> None:
    transport = httpx.ASGITransport(app=dependency_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/raise/integrity-like")
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
