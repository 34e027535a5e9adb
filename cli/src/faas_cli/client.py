"""The gateway's HTTP API as ``faas`` uses it: one ``httpx.Client``, one request id per command.

Every request carries ``X-Request-ID`` (the same for all requests of one command, so the
services' logs tie them together) and, when the command needs it, the bearer token. An answer
outside 2xx becomes an ``ApiError`` (``CliError`` with the exit status of its code); a gateway
that does not answer becomes ``cannot reach the gateway at URL``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from faas_cli import __version__
from faas_cli.errors import CliError, ExitCode, exit_code_for

DEFAULT_GATEWAY = "http://localhost:8080"
CONNECT_SECONDS = 10.0
IO_SECONDS = 30.0
"""How long one read or write may take (a sync call and a long poll read longer)."""
WAIT_MARGIN_SECONDS = 15.0
"""A long poll's HTTP read timeout is its wait plus this (the server answers at the wait's end)."""
RELOGIN_HINT = "run `faas login USERNAME`"


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    """The JSON body (None for an empty one)."""
    headers: httpx.Headers


class ApiError(CliError):
    """A refused request: the API's ``{"detail", "code"}`` and the whole body."""

    def __init__(self, answer: Answer, *, token_sent: bool, request_id: str) -> None:
        body = answer.body if isinstance(answer.body, dict) else {}
        self.status = answer.status
        self.code = str(body.get("code") or f"http_{answer.status}")
        self.body = answer.body
        message = f"{self.code}: {describe(body.get('detail'), answer.status)}"
        if answer.status == 401 and token_sent:
            message = f"{message} ({RELOGIN_HINT})"
        exit_code = exit_code_for(answer.status, self.code)
        # A platform error (not the function's) is worth reporting: its request id finds it in
        # the services' logs.
        platform_error = answer.status >= 500 and exit_code == ExitCode.ERROR
        details = f"request id: {request_id}" if platform_error else None
        super().__init__(message, exit_code, details=details)


def describe(detail: Any, status: int) -> str:
    """The API's sentence, or FastAPI's list of validation errors as one line."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        problems = [
            f"{'.'.join(str(part) for part in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        return "; ".join(problems) or "invalid request"
    return f"HTTP {status}"


class Gateway:
    """The platform's API at ``url``; ``transport`` replaces the network (tests)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.request_id = uuid.uuid4().hex
        self._client = httpx.Client(
            base_url=self.url,
            transport=transport,
            timeout=httpx.Timeout(IO_SECONDS, connect=CONNECT_SECONDS),
            headers={"User-Agent": f"faas-cli/{__version__}", "X-Request-ID": self.request_id},
        )

    def close(self) -> None:
        self._client.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float | None = IO_SECONDS,
    ) -> Answer:
        """Send one request; ``ApiError`` for an answer outside 2xx."""
        sent = dict(headers or {})
        if auth:
            sent["Authorization"] = f"Bearer {self._token()}"
        timeout = httpx.Timeout(
            connect=CONNECT_SECONDS, read=read_timeout, write=IO_SECONDS, pool=CONNECT_SECONDS
        )
        try:
            response = self._client.request(
                method, path, json=json, params=params, headers=sent, timeout=timeout
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise CliError(f"cannot reach the gateway at {self.url}", ExitCode.UNREACHABLE) from exc
        except httpx.TimeoutException as exc:
            raise CliError(f"the gateway at {self.url} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the gateway at {self.url} ({exc})", ExitCode.UNREACHABLE
            ) from exc
        answer = Answer(response.status_code, _json(response), response.headers)
        if not response.is_success:
            raise ApiError(answer, token_sent=auth, request_id=self.request_id)
        return answer

    def _token(self) -> str:
        if not self.token:
            raise CliError(f"not logged in to {self.url}: {RELOGIN_HINT}", ExitCode.AUTH)
        return self.token


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text.strip()[:500] or f"HTTP {response.status_code}"}
