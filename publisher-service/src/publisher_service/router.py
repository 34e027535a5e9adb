"""HTTP layer of publisher-service: parse, call ``service``, return a schema."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse

from faas_common.contract import ExecutionRecord
from faas_common.errors import ServiceError
from faas_common.http import unless_disconnected
from faas_common.logging import request_id_var
from faas_common.openapi import (
    AUTHENTICATED,
    JSON_BODY,
    PARAMETERS,
    error_response,
    header_objects,
    merge,
    standard_headers,
)
from faas_common.security import CurrentUser
from faas_common.validation import FUNCTION_NAME_PATTERN
from publisher_service.config import MAX_HISTORY_LIMIT, MAX_WAIT_SECONDS
from publisher_service.exceptions import ActivationError
from publisher_service.schemas import (
    ActivationErrorBody,
    ExecutionList,
    PublishAccepted,
    PublishRequest,
)
from publisher_service.service import ActivationRequest, Publisher
from publisher_service.timing import PhaseTimer
from publisher_service.waits import Waiter

PREFIX = "/publisher"
IDEMPOTENCY_KEY_MAX_LENGTH = 200

router = APIRouter(prefix=PREFIX, tags=["activations"])


async def _publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def _history_limit(request: Request) -> int:
    limit: int = request.app.state.settings.history_limit
    return limit


async def _waiter(request: Request) -> Waiter:
    waiter: Waiter = request.app.state.waiter
    return waiter


PublisherDep = Annotated[Publisher, Depends(_publisher)]
WaiterDep = Annotated[Waiter, Depends(_waiter)]
WaitSeconds = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description=f"Long poll: answer as soon as the record is final, or after this many "
        f"seconds (at most {MAX_WAIT_SECONDS}) with the record as it is then; 0 answers at once",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=IDEMPOTENCY_KEY_MAX_LENGTH,
        pattern=r"^[\x20-\x7e]+$",
        description="Optional, at most 200 printable ASCII characters, per user: a retried call "
        "with the same key and body returns the same execution instead of running again",
    ),
]


def status_url(execution_id: str) -> str:
    return f"{PREFIX}/executions/{execution_id}"


def _error(status_code: int, description: str, code: str, detail: str) -> dict[int | str, Any]:
    return error_response(status_code, description, code=code, detail=detail)


def _activation_error(status_code: int, description: str) -> dict[int | str, Any]:
    return {
        status_code: {
            "description": description,
            "model": ActivationErrorBody,
            "headers": header_objects(standard_headers(status_code)),
        }
    }


_SERVER_TIMING = (
    "Phase timings in milliseconds: queue, pool (a prewarmed container took the call), pull, "
    "create, start, run, remove, total"
)
_PUBLISH_RESPONSES: dict[int | str, Any] = {
    200: {
        "description": "Sync: the function succeeded",
        "model": ExecutionRecord,
        "headers": header_objects({"Server-Timing": _SERVER_TIMING}),
    },
    202: {
        "description": "Async: accepted, poll status_url",
        "model": PublishAccepted,
        "headers": header_objects(
            {"Location": "The execution's status_url", "Server-Timing": _SERVER_TIMING}
        ),
    },
    **AUTHENTICATED,
    **JSON_BODY,
    **_error(
        403,
        "The function's image is not allowed for the caller now (IMAGE_POLICY, or an internal "
        "registry host); nothing was queued",
        "image_not_allowed",
        "The function's image is not allowed for you",
    ),
    **_error(404, "The caller has no such function", "function_not_found", "Function not found"),
    **_error(
        409,
        "The Idempotency-Key was used for a different request",
        "idempotency_key_reused",
        "This Idempotency-Key was already used for a different request",
    ),
    **_error(
        413,
        "The argument exceeds the argv limit (argument_too_large), or the body the body cap "
        "(payload_too_large); nothing was queued",
        "argument_too_large",
        "The argument is too large",
    ),
    **_activation_error(429, "concurrency_limit: too many activations in flight; see Retry-After"),
    **_activation_error(
        502, "function_failed (non-zero exit), output_too_large or image_unavailable"
    ),
    **_activation_error(503, "runtime_unavailable: no spawner, Docker or NATS"),
    **_activation_error(
        504, "timed_out: the function exceeded its timeout, or no worker started it in time"
    ),
    **_activation_error(
        507, "storage_full: the execution records (or Idempotency-Keys) are full; nothing ran"
    ),
}


@router.post(
    "/publish",
    summary='Activate a function with one string argument (sync, or async with "async": true)',
    response_model=None,
    responses=_PUBLISH_RESPONSES,
)
async def publish(
    body: PublishRequest,
    user: CurrentUser,
    publisher: PublisherDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    timer = PhaseTimer()
    request = ActivationRequest(
        user_id=user.user_id,
        username=user.username,
        name=body.name,
        argument=body.argument,
        is_async=body.is_async,
        idempotency_key=idempotency_key,
        request_id=request_id_var.get(),
    )
    try:
        activation = await publisher.publish(request, timer=timer)
    except ActivationError as exc:
        timings = exc.execution.timings if exc.execution is not None else None
        exc.headers["Server-Timing"] = timer.header(timings)
        raise
    except ServiceError as exc:
        exc.headers["Server-Timing"] = timer.header()
        raise
    record = activation.record
    if record is None:
        location = status_url(activation.execution_id)
        accepted = PublishAccepted(execution_id=activation.execution_id, status_url=location)
        return JSONResponse(
            accepted.model_dump(),
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Location": location, "Server-Timing": timer.header()},
        )
    return JSONResponse(
        record.model_dump(mode="json"),
        headers={"Server-Timing": timer.header(record.timings)},
    )


@router.get(
    "/executions/{execution_id}",
    summary="One of the caller's execution records; with wait, once it is final",
    responses={
        **AUTHENTICATED,
        **PARAMETERS,
        **_error(
            404, "No such execution of the caller (or expired)", "execution_not_found", "Not found"
        ),
        **_error(
            429,
            "The caller holds MAX_WAITERS_PER_USER long polls on this instance; see Retry-After",
            "wait_limit",
            "You hold the most long polls allowed at once: retry later, or without wait",
        ),
        **_error(
            503,
            "A dependency is unavailable, or this instance holds MAX_WAITERS long polls "
            "(too_many_waiters); see Retry-After",
            "too_many_waiters",
            "This instance holds the most long polls it can: retry later, or without wait",
        ),
    },
)
async def get_execution(
    execution_id: str,
    request: Request,
    user: CurrentUser,
    publisher: PublisherDep,
    waiter: WaiterDep,
    wait: WaitSeconds = 0,
) -> ExecutionRecord:
    if wait <= 0:
        return await publisher.get_execution(user.user_id, execution_id)
    waiting = waiter.wait(user.user_id, execution_id, seconds=wait)
    return await unless_disconnected(request.receive, waiting)


@router.get(
    "/executions",
    summary="The caller's recent executions, newest first",
    responses=merge(AUTHENTICATED, PARAMETERS),
)
async def list_executions(
    user: CurrentUser,
    publisher: PublisherDep,
    default_limit: Annotated[int, Depends(_history_limit)],
    function: Annotated[
        str | None,
        Query(pattern=FUNCTION_NAME_PATTERN, description="Only this function's executions"),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=MAX_HISTORY_LIMIT, description="At most this many (default 20)"),
    ] = None,
) -> ExecutionList:
    records = await publisher.list_executions(
        user.user_id, function=function, limit=limit or default_limit
    )
    return ExecutionList(executions=records)
