"""Fixtures of the ``faas`` command line's unit tests: a fake gateway behind httpx.MockTransport
and a runner that drives the CLI as a user's shell would (arguments, stdin, environment)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from faas_cli.app import app
from faas_cli.session import Session

Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeGateway:
    """Answers by ``(method, path)``; an unknown route is a 404 ``not_found``. Every request is
    kept in ``requests``."""

    routes: dict[tuple[str, str], Handler | list[httpx.Response]] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    def answer(self, method: str, path: str, *responses: httpx.Response) -> None:
        """Answer with ``responses`` in turn (the last one again once they ran out)."""
        self.routes[(method, path)] = list(responses)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return json_response(404, {"detail": "Not found", "code": "not_found"})
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == path]


def json_response(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


@dataclass
class Cli:
    gateway: FakeGateway
    config_dir: Path

    def __call__(
        self, *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> Result:
        session = Session(transport=httpx.MockTransport(self.gateway.handle))
        return CliRunner().invoke(app, list(args), input=input, env=env, obj=session)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def cli(gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    config_dir = tmp_path / "config" / "faas"
    monkeypatch.setenv("FAAS_CONFIG_DIR", str(config_dir))
    monkeypatch.delenv("FAAS_TOKEN", raising=False)
    monkeypatch.delenv("FAAS_GATEWAY", raising=False)
    return Cli(gateway, config_dir)


TOKEN = "header.payload.signature"


@pytest.fixture
def logged_in(cli: Cli, gateway: FakeGateway) -> Cli:
    """``cli`` after ``faas login alice``."""
    gateway.answer(
        "POST",
        "/auth/login",
        json_response(200, {"access_token": TOKEN, "token_type": "bearer", "expires_in": 3600}),
    )
    result = cli("login", "alice", "--password-stdin", input="wonderland-1234\n")
    assert result.exit_code == 0, result.output
    gateway.requests.clear()
    return cli
