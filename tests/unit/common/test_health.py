"""Liveness and readiness routes: 200 while every check answers, 503 naming the one that fails."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI

from faas_common.errors import install_error_handlers
from faas_common.health import ReadinessCheck, health_router


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionRefusedError("database down")


async def hangs() -> None:
    await asyncio.sleep(30)


async def get(checks: dict[str, ReadinessCheck], path: str) -> httpx.Response:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(health_router("/svc", checks, check_timeout=0.05))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        return await client.get(path)


async def test_health_answers_even_when_dependencies_fail() -> None:
    response = await get({"database": broken}, "/svc/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_every_check_passes() -> None:
    response = await get({"database": ok, "nats": ok}, "/svc/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}


async def test_ready_without_checks() -> None:
    response = await get({}, "/svc/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}


async def test_not_ready_names_the_failing_dependency() -> None:
    response = await get({"database": broken, "nats": ok}, "/svc/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["code"] == "not_ready"
    assert body["detail"]
    assert body["checks"]["nats"] == "ok"
    assert body["checks"]["database"] == "unavailable: ConnectionRefusedError"
    assert "database down" not in response.text


async def test_a_hanging_check_times_out() -> None:
    response = await asyncio.wait_for(get({"nats": hangs}, "/svc/ready"), timeout=5)
    assert response.status_code == 503
    assert response.json()["checks"]["nats"] == "unavailable: TimeoutError"
