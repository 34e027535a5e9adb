"""Domain errors of publisher-service: ``faas_common.errors`` classes with the publisher's codes.

Hierarchy (``ActivationError`` carries the execution record, when there is one, under
``"execution"`` in the body)::

    ServiceError
    ├── Forbidden ── ImageNotAllowed                  403 image_not_allowed
    ├── NotFound ─┬ FunctionNotFound                  404 function_not_found
    │             └ ExecutionNotFound                 404 execution_not_found
    ├── Conflict ── IdempotencyKeyReused              409 idempotency_key_reused
    ├── PayloadTooLarge ── ArgumentTooLarge           413 argument_too_large
    ├── TooManyRequests ── WaitLimit                  429 wait_limit            Retry-After: 1
    ├── DependencyUnavailable ── TooManyWaiters       503 too_many_waiters      Retry-After: 2
    └── ActivationError
        ├── ConcurrencyLimit    (TooManyRequests)     429 concurrency_limit     Retry-After: 1
        ├── ActivationFailed    (BadGateway)          502 function_failed / output_too_large /
        │                                                 image_unavailable
        ├── RuntimeUnavailable  (DependencyUnavailable) 503 runtime_unavailable Retry-After: 2
        ├── StorageFull         (InsufficientStorage) 507 storage_full
        └── ActivationTimedOut  (GatewayTimeout)      504 timed_out
"""

from __future__ import annotations

from faas_common.contract import ExecutionRecord
from faas_common.errors import (
    BadGateway,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    GatewayTimeout,
    InsufficientStorage,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
)


class ImageNotAllowed(Forbidden):
    code = "image_not_allowed"
    detail = "The function's image is not allowed for you"


class FunctionNotFound(NotFound):
    code = "function_not_found"
    detail = "Function not found"


class ExecutionNotFound(NotFound):
    code = "execution_not_found"
    detail = "Execution not found"


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"
    detail = "This Idempotency-Key was already used for a different request"


class ArgumentTooLarge(PayloadTooLarge):
    code = "argument_too_large"
    detail = "The argument is too large"


class WaitLimit(TooManyRequests):
    code = "wait_limit"
    detail = "You hold the most long polls allowed at once: retry later, or without wait"


class TooManyWaiters(DependencyUnavailable):
    code = "too_many_waiters"
    detail = "This instance holds the most long polls it can: retry later, or without wait"


class ActivationError(ServiceError):
    """An activation that did not succeed; its record (if any) is in the body as ``execution``."""

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        execution: ExecutionRecord | None = None,
    ) -> None:
        body = {"execution": execution.model_dump(mode="json")} if execution is not None else None
        super().__init__(detail, code=code, body=body)
        self.execution = execution


class ConcurrencyLimit(ActivationError, TooManyRequests):
    code = "concurrency_limit"
    detail = "Too many activations in flight (cluster-wide or for this user): retry later"


class ActivationFailed(ActivationError, BadGateway):
    code = "function_failed"
    detail = "The function failed"


class RuntimeUnavailable(ActivationError, DependencyUnavailable):
    code = "runtime_unavailable"
    detail = "The activation runtime (NATS, spawners) is unavailable"


class StorageFull(ActivationError, InsufficientStorage):
    code = "storage_full"
    detail = "The execution records are full (their storage limit): nothing was run, retry later"


class ActivationTimedOut(ActivationError, GatewayTimeout):
    code = "timed_out"
    detail = "The activation timed out"
