"""Liveness (``/<prefix>/health``) and readiness (``/<prefix>/ready``) routes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from faas_common.openapi import error_response

ReadinessCheck = Callable[[], Awaitable[None]]


def health_router(
    prefix: str, checks: Mapping[str, ReadinessCheck], *, check_timeout: float = 2.0
) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["health"])

    @router.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Readiness: every dependency answers",
        responses=error_response(
            503,
            "A dependency is unavailable (each check's outcome under checks)",
            code="not_ready",
            detail="A dependency is unavailable",
            headers={},
        ),
    )
    async def ready() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=check_timeout)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        ok = all(value == "ok" for value in results.values())
        body = {"status": "ok" if ok else "unavailable", "checks": results}
        if not ok:
            body["code"] = "not_ready"
            body["detail"] = "A dependency is unavailable"
        return JSONResponse(body, status_code=200 if ok else 503)

    return router
