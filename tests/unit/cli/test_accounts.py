"""``faas register / login / whoami / logout``: what is sent, where the token is kept (and how
safely), which token is used, and the errors a user sees."""

from __future__ import annotations

import json
import stat

import httpx

from tests.unit.cli.conftest import TOKEN, Cli, FakeGateway, json_response

VALIDATED = {"user_id": "u-1", "username": "alice", "expires_at": "2026-12-03T12:00:00+00:00"}


def test_register_prompts_twice_for_the_password(cli: Cli, gateway: FakeGateway) -> None:
    gateway.answer("POST", "/auth/register", json_response(201, {"id": "u-1", "username": "alice"}))

    result = cli("register", "alice", input="wonderland-1234\nwonderland-1234\n")

    assert result.exit_code == 0, result.output
    [request] = gateway.sent("POST", "/auth/register")
    assert json.loads(request.content) == {"username": "alice", "password": "wonderland-1234"}
    assert "Authorization" not in request.headers
    assert "Password" in result.stderr  # the prompts stay off stdout
    # (the test runner echoes a newline for each hidden input; a terminal does not)
    assert result.stdout.strip() == "registered alice (id u-1)"


def test_login_keeps_the_token_readable_only_by_the_user(logged_in: Cli) -> None:
    folder = logged_in.config_dir
    [kept] = list(folder.iterdir())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    stored = json.loads(kept.read_text())
    assert stored["http://localhost:8080"]["access_token"] == TOKEN
    assert stored["http://localhost:8080"]["username"] == "alice"


def test_login_sends_the_password_read_from_stdin(cli: Cli, gateway: FakeGateway) -> None:
    gateway.answer(
        "POST", "/auth/login", json_response(200, {"access_token": TOKEN, "expires_in": 60})
    )

    result = cli("login", "alice", "--password-stdin", input="pass word 1234\n")

    assert result.exit_code == 0, result.output
    [request] = gateway.requests
    assert json.loads(request.content) == {"username": "alice", "password": "pass word 1234"}
    assert result.stdout == "logged in to http://localhost:8080 as alice\n"
    assert TOKEN not in result.output  # only --json prints it


def test_bad_credentials_are_an_auth_error(cli: Cli, gateway: FakeGateway) -> None:
    refused = {"detail": "Invalid username or password", "code": "invalid_credentials"}
    gateway.answer("POST", "/auth/login", json_response(401, refused))

    result = cli("login", "alice", "--password-stdin", input="nope-nope\n")

    assert result.exit_code == 3
    assert result.stderr == "error: invalid_credentials: Invalid username or password\n"
    assert not cli.config_dir.exists()


def test_whoami_uses_the_stored_token(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("GET", "/auth/validate", json_response(200, VALIDATED))

    result = logged_in("whoami")

    assert result.exit_code == 0, result.output
    assert result.stdout == "alice (id u-1)\n"
    [request] = gateway.requests
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert len(request.headers["X-Request-ID"]) == 32


def test_faas_token_overrides_the_stored_one(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("GET", "/auth/validate", json_response(200, VALIDATED))

    result = logged_in("--json", "whoami", env={"FAAS_TOKEN": "other.token.here"})

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == VALIDATED
    assert gateway.requests[0].headers["Authorization"] == "Bearer other.token.here"


def test_a_token_is_kept_per_gateway(logged_in: Cli, gateway: FakeGateway) -> None:
    result = logged_in("--gateway", "http://127.0.0.1:9999/", "whoami")

    assert result.exit_code == 3
    assert result.stderr == (
        "error: not logged in to http://127.0.0.1:9999: run `faas login USERNAME`\n"
    )
    assert gateway.requests == []


def test_a_refused_token_says_to_log_in_again(logged_in: Cli, gateway: FakeGateway) -> None:
    expired = {"detail": "Token expired", "code": "token_expired"}
    gateway.answer("GET", "/auth/validate", json_response(401, expired))

    result = logged_in("whoami")

    assert result.exit_code == 3
    assert result.stderr == "error: token_expired: Token expired (run `faas login USERNAME`)\n"


def test_logout_revokes_the_token_then_forgets_it(logged_in: Cli, gateway: FakeGateway) -> None:
    gateway.answer("POST", "/auth/logout", httpx.Response(204))

    result = logged_in("logout")

    assert result.exit_code == 0, result.output
    assert result.stdout == "logged out\n"
    [request] = gateway.sent("POST", "/auth/logout")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert json.loads((logged_in.config_dir / "credentials.json").read_text()) == {}
    assert logged_in("whoami").exit_code == 3


def test_logout_with_a_dead_token_still_forgets_it(logged_in: Cli, gateway: FakeGateway) -> None:
    revoked = {"detail": "Token revoked", "code": "token_revoked"}
    gateway.answer("POST", "/auth/logout", json_response(401, revoked))

    result = logged_in("logout")

    assert result.exit_code == 0, result.output
    assert result.stdout == "logged out (the token was no longer valid)\n"
    assert json.loads((logged_in.config_dir / "credentials.json").read_text()) == {}


def test_a_gateway_that_does_not_answer_is_named(cli: Cli, gateway: FakeGateway) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    gateway.routes[("POST", "/auth/login")] = refuse

    result = cli(
        "--gateway", "http://127.0.0.1:1", "login", "alice", "--password-stdin", input="x" * 9
    )

    assert result.exit_code == 7
    assert result.stderr == "error: cannot reach the gateway at http://127.0.0.1:1\n"


def test_the_gateway_comes_from_faas_gateway(cli: Cli, gateway: FakeGateway) -> None:
    gateway.answer("POST", "/auth/login", json_response(200, {"access_token": TOKEN}))

    result = cli(
        "login",
        "alice",
        "--password-stdin",
        input="wonderland-1234",
        env={"FAAS_GATEWAY": "http://gateway.test:8000"},
    )

    assert result.exit_code == 0, result.output
    assert str(gateway.requests[0].url) == "http://gateway.test:8000/auth/login"
