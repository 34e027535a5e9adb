"""``faas``: the command tree, its global options and the account commands.

Global options come before the command: ``faas [--gateway URL] [--json] COMMAND``. The gateway
is also read from ``FAAS_GATEWAY`` (default ``http://localhost:8080``, the local stack). The
function commands live in ``functions.py``, the execution commands (and ``invoke``, ``logs``) in
``executions.py``; exit statuses are listed in ``errors.py``.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from faas_cli import __version__, credentials
from faas_cli.client import DEFAULT_GATEWAY, ApiError
from faas_cli.errors import CliError
from faas_cli.executions import executions_app, invoke, logs
from faas_cli.functions import functions_app
from faas_cli.output import timestamp
from faas_cli.session import Session, session_of


class FaasGroup(TyperGroup):
    """The root command: a ``CliError`` from any command is printed and becomes the exit."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            exc.show()
            raise typer.Exit(exc.exit_code) from exc


app = typer.Typer(
    name="faas",
    cls=FaasGroup,
    help="The FaaS platform from the command line: accounts, functions, calls and their records.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(functions_app, name="fn")
app.add_typer(executions_app, name="executions")
app.command(help=invoke.__doc__)(invoke)
app.command(help=logs.__doc__)(logs)

Username = Annotated[str, typer.Argument(help="The account's name (3-64 of A-Z a-z 0-9 _ . -)")]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from stdin instead of a prompt"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"faas {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    ctx: typer.Context,
    gateway: Annotated[
        str,
        typer.Option(
            "--gateway", envvar="FAAS_GATEWAY", help="The platform's URL", show_default=True
        ),
    ] = DEFAULT_GATEWAY,
    json_mode: Annotated[
        bool, typer.Option("--json", help="Print the API's JSON answers as they are")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version"),
    ] = False,
) -> None:
    session = ctx.ensure_object(Session)
    session.gateway_url = gateway.rstrip("/")
    session.json_mode = json_mode


def _password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm, err=True)
    if not password:
        raise typer.BadParameter("the password is empty", param_hint="password")
    return password


@app.command()
def register(ctx: typer.Context, username: Username, password_stdin: PasswordStdin = False) -> None:
    """Create an account (prompts for its password twice unless --password-stdin)."""
    session = session_of(ctx)
    body = {"username": username, "password": _password(password_stdin, confirm=True)}
    with session.gateway() as gateway:
        answer = gateway.call("POST", "/auth/register", auth=False, json=body)
    if session.json_mode:
        session.out.data(answer.body)
        return
    session.out.text(f"registered {answer.body['username']} (id {answer.body['id']})")
    session.out.note(f"next: faas login {answer.body['username']}")


@app.command()
def login(ctx: typer.Context, username: Username, password_stdin: PasswordStdin = False) -> None:
    """Log in and keep the token (mode 0600) in the config dir, for this gateway."""
    session = session_of(ctx)
    body = {"username": username, "password": _password(password_stdin, confirm=False)}
    with session.gateway() as gateway:
        answer = gateway.call("POST", "/auth/login", auth=False, json=body)
    expires_in = answer.body.get("expires_in")
    expires_at = time.time() + expires_in if isinstance(expires_in, int | float) else None
    saved = credentials.save(
        session.gateway_url,
        credentials.Credentials(username, answer.body["access_token"], expires_at),
    )
    if session.json_mode:
        session.out.data(answer.body)
        return
    session.out.text(f"logged in to {session.gateway_url} as {username}")
    session.out.note(f"token kept in {saved} until {timestamp(expires_at) or 'it expires'}")


@app.command()
def logout(ctx: typer.Context) -> None:
    """Revoke the token (POST /auth/logout) and delete the stored one."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        try:
            gateway.call("POST", "/auth/logout")
            revoked = True
        except ApiError as exc:
            if exc.status != 401:
                raise
            revoked = False  # expired or revoked already: nothing left to revoke
    forgotten = credentials.forget(session.gateway_url)
    if session.json_mode:
        session.out.data({"revoked": revoked, "forgotten": forgotten})
        return
    said = "logged out" if revoked else "logged out (the token was no longer valid)"
    session.out.text(said if forgotten else f"{said}; no token was stored for this gateway")


@app.command()
def whoami(ctx: typer.Context) -> None:
    """Who the token belongs to, and until when it is valid."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        answer = gateway.call("GET", "/auth/validate")
    if session.json_mode:
        session.out.data(answer.body)
        return
    body = answer.body
    session.out.text(f"{body['username']} (id {body['user_id']})")
    session.out.note(f"token valid until {timestamp(body.get('expires_at')) or 'unknown'}")


def main() -> None:
    """The console script."""
    app()
