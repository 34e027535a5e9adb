"""Calls and their records: ``faas invoke``, ``faas logs`` and ``faas executions ...``.

``invoke`` without ``--async`` waits for the result (``POST /publisher/publish``, whose answer
the platform bounds: start deadline + the function's timeout + a grace). ``executions wait``
long-polls ``GET /publisher/executions/{id}?wait=`` (at most 60 s a request) until the record is
final or its own ``--timeout`` passed.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from faas_cli.client import WAIT_MARGIN_SECONDS, ApiError, Gateway
from faas_cli.errors import CliError, ExitCode
from faas_cli.output import Output
from faas_cli.records import COLUMNS, finish, is_final, rows, show
from faas_cli.session import session_of

MAX_WAIT_SECONDS = 60.0
"""The longest wait one long poll may ask the publisher for."""
POLL_FLOOR_SECONDS = 1.0
"""A long poll that comes back sooner without a final record is not repeated before this."""
STDIN = "-"

executions_app = typer.Typer(
    help="Execution records: list, get one, wait for one.", no_args_is_help=True
)

ExecutionId = Annotated[str, typer.Argument(help="The execution id (from invoke --async)")]


def _record_path(execution_id: str) -> str:
    return f"/publisher/executions/{execution_id}"


def _argument(argument: str | None) -> str:
    """The argument itself, or stdin's text ('-' or none given) minus one final newline."""
    if argument is not None and argument != STDIN:
        return argument
    return sys.stdin.read().removesuffix("\n")


def invoke(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The function's name")],
    argument: Annotated[
        str | None,
        typer.Argument(help="Its argument; '-' or none: read stdin (one final newline dropped)"),
    ] = None,
    is_async: Annotated[
        bool, typer.Option("--async", help="Do not wait: print the execution id")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="A retried call with the same key returns the first call's execution"),
    ] = None,
) -> None:
    """Call a function: its result on stdout, its logs on stderr."""
    session = session_of(ctx)
    body: dict[str, Any] = {"name": name, "argument": _argument(argument)}
    if is_async:
        body["async"] = True
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with session.gateway() as gateway, session.out.spinner(f"running {name}"):
        try:
            answer = gateway.call(
                "POST", "/publisher/publish", json=body, headers=headers, read_timeout=None
            )
        except ApiError as exc:
            _failed_call(session.out, exc)
            raise
    if is_async:
        if session.json_mode:
            session.out.data(answer.body)
        else:
            session.out.text(answer.body["execution_id"])
        return
    finish(session.out, answer.body)


def _failed_call(out: Output, error: ApiError) -> None:
    """Before the error line: the JSON answer, or the failed execution's logs."""
    if out.json_mode:
        out.data(error.body)
        return
    execution = error.body.get("execution") if isinstance(error.body, dict) else None
    if isinstance(execution, dict):
        out.logs(execution.get("logs"))


def logs(ctx: typer.Context, execution_id: ExecutionId) -> None:
    """Print an execution's logs (what its function wrote to stderr, the tail kept)."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        record = gateway.call("GET", _record_path(execution_id)).body
    if session.json_mode:
        session.out.data(record)
    elif record.get("logs"):
        text = record["logs"]
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@executions_app.command("list")
def list_executions(
    ctx: typer.Context,
    function: Annotated[
        str | None, typer.Option("--function", help="Only this function's executions")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, max=100, help="At most this many")
    ] = None,
) -> None:
    """Your recent executions, newest first."""
    session = session_of(ctx)
    params = {
        key: value for key, value in (("function", function), ("limit", limit)) if value is not None
    }
    with session.gateway() as gateway:
        body = gateway.call("GET", "/publisher/executions", params=params).body
    if session.json_mode:
        session.out.data(body)
    else:
        session.out.table(COLUMNS, rows(body["executions"]))


@executions_app.command("get")
def get_execution(ctx: typer.Context, execution_id: ExecutionId) -> None:
    """One execution record."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        record = gateway.call("GET", _record_path(execution_id)).body
    show(session.out, record)


@executions_app.command("wait")
def wait_execution(
    ctx: typer.Context,
    execution_id: ExecutionId,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, help="Give up after this many seconds")
    ] = 300.0,
) -> None:
    """Wait until an execution is final, then answer like invoke (result, logs, exit status)."""
    session = session_of(ctx)
    with session.gateway() as gateway, session.out.spinner(f"waiting for {execution_id}"):
        record = _wait(gateway, execution_id, timeout)
    if not is_final(record):
        if session.json_mode:
            session.out.data(record)
        raise CliError(
            f"execution {execution_id} is still {record.get('status')} after {timeout:g} s",
            ExitCode.TIMED_OUT,
        )
    finish(session.out, record)


def _wait(gateway: Gateway, execution_id: str, timeout: float) -> dict[str, Any]:
    """Long polls until the record is final or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        asked = time.monotonic()
        wait = min(max(deadline - asked, 0.0), MAX_WAIT_SECONDS)
        record: dict[str, Any] = gateway.call(
            "GET",
            _record_path(execution_id),
            params={"wait": f"{wait:.3f}"} if wait > 0 else None,
            read_timeout=wait + WAIT_MARGIN_SECONDS,
        ).body
        if is_final(record) or time.monotonic() >= deadline:
            return record
        time.sleep(max(0.0, min(POLL_FLOOR_SECONDS - (time.monotonic() - asked), wait)))
