"""What ``faas`` exits with, and the one error it prints.

Exit statuses (``ExitCode``)::

    0  success
    1  any other error (404, 409, 422, a 5xx other than the ones below)
    2  usage: a bad option or argument (Click's own status)
    3  authentication: not logged in, a token refused (401) or an action not allowed (403)
    4  the function failed: non-zero exit, output too large, image unavailable
    5  timed out: the function's timeout, no worker in time, or ``executions wait`` ran out
    6  a limit: too many activations in flight, too many waits (429)
    7  the gateway cannot be reached

``CliError`` carries the message, the status and lines printed after it; the command group
(``app.FaasGroup``) prints it on stderr and exits with its status.
"""

from __future__ import annotations

import sys
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    FUNCTION_FAILED = 4
    TIMED_OUT = 5
    LIMIT = 6
    UNREACHABLE = 7


FUNCTION_FAILURES = frozenset({"function_failed", "output_too_large", "image_unavailable"})
"""Error codes of an activation that ran (or could not start) because of the function itself."""

_BY_STATUS = {401: ExitCode.AUTH, 403: ExitCode.AUTH, 429: ExitCode.LIMIT, 504: ExitCode.TIMED_OUT}


def exit_code_for(status: int, code: str | None) -> ExitCode:
    """The exit status of an API error answer."""
    if code in FUNCTION_FAILURES:
        return ExitCode.FUNCTION_FAILED
    if code == "timed_out":
        return ExitCode.TIMED_OUT
    return _BY_STATUS.get(status, ExitCode.ERROR)


class CliError(Exception):
    """An error for the user: ``error: MESSAGE`` on stderr, then ``details``, then the exit."""

    def __init__(
        self, message: str, exit_code: int = ExitCode.ERROR, *, details: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details

    def show(self) -> None:
        sys.stderr.write(f"error: {self.message}\n")
        if self.details:
            sys.stderr.write(self.details.rstrip("\n") + "\n")
