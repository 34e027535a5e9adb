"""Record shaping: a runtime's ``RunResult`` as the execution record the spawner stores and
replies, cut to what one NATS message holds (never a silently cut result)."""

from __future__ import annotations

from faas_common.contract import ErrorCode, ExecutionRecord, ExecutionStatus, Job
from faas_common.executions import queue_ms
from spawner_service.runtime.base import Outcome, RunResult

OUTCOMES: dict[Outcome, tuple[ExecutionStatus, ErrorCode | None]] = {
    "succeeded": ("succeeded", None),
    "function_failed": ("failed", "function_failed"),
    "timed_out": ("timed_out", "timed_out"),
    "output_too_large": ("failed", "output_too_large"),
    "image_unavailable": ("failed", "image_unavailable"),
    "runtime_unavailable": ("failed", "runtime_unavailable"),
}
"""Record status and error for each runtime outcome."""


def result_text(stdout: bytes) -> str:
    """stdout as the record's ``result``: UTF-8 (invalid bytes replaced), one trailing newline
    removed (``echo`` and ``print`` add one)."""
    text = stdout.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def final_record(
    job: Job,
    result: RunResult,
    *,
    created_at: float,
    started_at: float,
    finished_at: float,
) -> ExecutionRecord:
    """The record of a finished activation. ``result`` only when it succeeded or exited non-zero
    (never a cut or partial output); ``logs`` is the stderr tail."""
    timings = {"queue": queue_ms(job, started_at)}
    timings.update(result.timings)
    status, error = OUTCOMES[result.outcome]
    with_output = result.outcome in ("succeeded", "function_failed")
    return ExecutionRecord(
        execution_id=job.execution_id,
        function=job.function.name,
        status=status,
        result=result_text(result.stdout) if with_output else None,
        exit_code=result.exit_code,
        logs=result.stderr_tail.decode("utf-8", errors="replace"),
        error=error,
        detail=result.detail,
        duration_ms=round((finished_at - started_at) * 1000, 1),
        timings=timings,
        created_at=created_at,
        finished_at=finished_at,
        request_id=job.request_id,
    )


def record_size(record: ExecutionRecord) -> int:
    """Bytes of the record as stored and replied (JSON, UTF-8)."""
    return len(record.model_dump_json().encode())


def fit_record(record: ExecutionRecord, limit: int) -> ExecutionRecord:
    """``record`` if it fits in ``limit`` bytes. Otherwise its result, unless it would fit with
    the logs alone cut, is dropped (the outcome becomes ``output_too_large``: never a silently
    cut result), and its logs (a tail already) lose their beginning until it fits."""
    size = record_size(record)
    if size <= limit:
        return record
    fitted = record
    if record.result is not None and record_size(record.model_copy(update={"logs": ""})) > limit:
        fitted = record.model_copy(
            update={
                "status": OUTCOMES["output_too_large"][0],
                "error": "output_too_large",
                "result": None,
                "detail": f"the result is too large to store ({size} bytes as JSON; an "
                f"execution record holds at most {limit})",
            }
        )
    logs = fitted.logs or ""
    while (over := record_size(fitted) - limit) > 0 and logs:
        logs = logs[over:]  # every character takes at least one byte: one cut is enough
        fitted = fitted.model_copy(update={"logs": logs})
    return fitted


def unstorable_record(record: ExecutionRecord, limit: int) -> ExecutionRecord:
    """The small record stored instead of one the server refused as too large."""
    return record.model_copy(
        update={
            "status": OUTCOMES["output_too_large"][0],
            "error": "output_too_large",
            "result": None,
            "logs": None,
            "detail": f"the result is too large to store (more than {limit} bytes as JSON)",
        }
    )
