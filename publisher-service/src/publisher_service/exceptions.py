"""Domain errors of publisher-service (all ``faas_common.ServiceError``).

Hierarchy::

    ServiceError
    ├── NotFound ─┬ FunctionNotFound          404 function_not_found
    │             └ ExecutionNotFound         404 execution_not_found
    ├── Conflict ── IdempotencyKeyReused      409 idempotency_key_reused
    ├── PayloadTooLarge ── ArgumentTooLarge   413 argument_too_large
    └── ActivationError (the execution record, when there is one, under "execution")
        ├── ConcurrencyLimit                  429 concurrency_limit (Retry-After: 1)
        ├── ActivationFailed                  502 function_failed / output_too_large /
        │                                         image_unavailable
        ├── RuntimeUnavailable                503 runtime_unavailable (no spawner, NATS down)
        └── ActivationTimedOut                504 timed_out
"""

from __future__ import annotations

from faas_common.contract import ExecutionRecord
from faas_common.errors import Conflict, NotFound, PayloadTooLarge, ServiceError

RETRY_AFTER_SECONDS = 1


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


class ActivationError(ServiceError):
    """An activation that did not succeed; its record (if any) is in the body as ``execution``."""

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        execution: ExecutionRecord | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = {"execution": execution.model_dump(mode="json")} if execution is not None else None
        super().__init__(detail, code=code, headers=headers, body=body)
        self.execution = execution


class ConcurrencyLimit(ActivationError):
    status_code = 429
    code = "concurrency_limit"
    detail = "Too many activations in flight (cluster-wide or for this user): retry later"

    def __init__(
        self, detail: str | None = None, *, execution: ExecutionRecord | None = None
    ) -> None:
        super().__init__(
            detail, execution=execution, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )


class ActivationFailed(ActivationError):
    status_code = 502
    code = "function_failed"
    detail = "The function failed"


class RuntimeUnavailable(ActivationError):
    status_code = 503
    code = "runtime_unavailable"
    detail = "The activation runtime (NATS, spawners) is unavailable"


class ActivationTimedOut(ActivationError):
    status_code = 504
    code = "timed_out"
    detail = "The activation timed out"
