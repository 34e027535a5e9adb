"""Execution records as ``faas`` shows them, and the exit status each one means."""

from __future__ import annotations

from typing import Any

from faas_cli.errors import CliError, ExitCode, exit_code_for
from faas_cli.output import Output, timestamp

FINAL = frozenset({"succeeded", "failed", "timed_out", "rejected"})
_STATUS_CODES = {"timed_out": ExitCode.TIMED_OUT, "rejected": ExitCode.LIMIT}


def is_final(record: dict[str, Any]) -> bool:
    return record.get("status") in FINAL


def failure(record: dict[str, Any]) -> CliError:
    """The error a record that did not succeed stands for."""
    status = str(record.get("status"))
    error = record.get("error") or status
    sentence = record.get("detail") or f"the execution {status.replace('_', ' ')}"
    code = _STATUS_CODES.get(status) or exit_code_for(0, str(error))
    return CliError(f"{error}: {sentence}", code)


def finish(out: Output, record: dict[str, Any]) -> None:
    """A final record as ``faas invoke`` answers it: the result on stdout and the logs on
    stderr (or the JSON), then the record's error if it did not succeed."""
    if out.json_mode:
        out.data(record)
    else:
        out.logs(record.get("logs"))
        if record.get("status") == "succeeded":
            out.result(record.get("result"))
    if record.get("status") != "succeeded":
        raise failure(record)


def show(out: Output, record: dict[str, Any]) -> None:
    """One record in full (``faas executions get``)."""
    if out.json_mode:
        out.data(record)
        return
    out.fields(
        {
            "execution_id": record.get("execution_id"),
            "function": record.get("function"),
            "status": record.get("status"),
            "created": timestamp(record.get("created_at")),
            "finished": timestamp(record.get("finished_at")),
            "duration_ms": record.get("duration_ms"),
            "exit_code": record.get("exit_code"),
            "error": record.get("error"),
            "detail": record.get("detail"),
            "result": record.get("result"),
        }
    )


def rows(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            record.get("execution_id"),
            record.get("function"),
            record.get("status"),
            timestamp(record.get("created_at")),
            record.get("duration_ms"),
        )
        for record in records
    ]


COLUMNS = ("EXECUTION", "FUNCTION", "STATUS", "CREATED", "DURATION_MS")
