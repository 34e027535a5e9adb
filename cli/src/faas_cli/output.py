"""What ``faas`` prints: the API's JSON (``--json``), or tables and fields for people.

Results and listings go to stdout, everything else (a function's logs, progress, errors) to
stderr, so ``faas invoke hello x > out`` keeps only the result. A function's result is written
exactly as the API returned it, plus one newline; nothing in it is styled or cut. The spinner
only shows when stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

WIDE = 10_000
"""Columns of a console that is not a terminal: table cells are never cut for a pipe."""


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else WIDE
    return Console(file=stream, stderr=stderr, width=width, highlight=False, soft_wrap=True)


class Output:
    def __init__(self, *, json_mode: bool) -> None:
        self.json_mode = json_mode

    def data(self, body: Any) -> None:
        """The API's JSON on stdout."""
        sys.stdout.write(json.dumps(body, indent=2, ensure_ascii=False) + "\n")

    def text(self, line: str) -> None:
        """A line for people on stdout (not in ``--json`` mode: the JSON says it)."""
        sys.stdout.write(line + "\n")

    def note(self, line: str) -> None:
        """A line on stderr, whatever the mode."""
        sys.stderr.write(line + "\n")

    def result(self, result: str | None) -> None:
        sys.stdout.write((result or "") + "\n")
        sys.stdout.flush()

    def logs(self, logs: str | None) -> None:
        if logs:
            sys.stderr.write(logs if logs.endswith("\n") else logs + "\n")
            sys.stderr.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(*columns, box=None, pad_edge=False, header_style="bold")
        for row in rows:
            table.add_row(*("" if value is None else str(value) for value in row))
        _console(stderr=False).print(table)

    def fields(self, values: Mapping[str, Any]) -> None:
        self.table(
            ("FIELD", "VALUE"),
            [(name, value) for name, value in values.items() if value not in ("", None)],
        )

    @contextlib.contextmanager
    def spinner(self, message: str) -> Iterator[None]:
        console = _console(stderr=True)
        if not console.is_terminal:
            yield
            return
        with console.status(message):
            yield


def timestamp(value: Any) -> str:
    """Epoch seconds or an ISO time as local ISO time (to the second), or an empty cell."""
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, tz=UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        return ""
    return moment.astimezone().isoformat(timespec="seconds")
