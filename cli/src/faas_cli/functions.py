"""``faas fn ...``: your functions in the registry (``/registry/functions``).

``create`` and ``update`` take the same options; ``update`` sends only the ones given
(``PATCH``), and ``--env`` then replaces the whole environment.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from faas_cli.output import timestamp
from faas_cli.session import Session, session_of

functions_app = typer.Typer(
    help="Your functions: create, list, get, update, delete.", no_args_is_help=True
)

PATH = "/registry/functions"
COLUMNS = ("NAME", "IMAGE", "TIMEOUT_S", "MEMORY_MB", "DESCRIPTION")

Name = Annotated[str, typer.Argument(help="The function's name")]
Description = Annotated[str | None, typer.Option(help="What it does")]
Timeout = Annotated[
    int | None, typer.Option("--timeout", min=1, help="Seconds a call may run before it is killed")
]
Memory = Annotated[int | None, typer.Option("--memory", min=1, help="Memory limit in MB")]
Env = Annotated[
    list[str] | None,
    typer.Option("--env", metavar="KEY=VALUE", help="An environment variable (repeatable)"),
]


def _env(pairs: list[str] | None) -> dict[str, str] | None:
    if pairs is None:
        return None
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    return env


def _fields(
    image: str | None,
    description: str | None,
    timeout: int | None,
    memory: int | None,
    env: list[str] | None,
    **given: Any,
) -> dict[str, Any]:
    """The request body: the options given, under the API's field names."""
    fields = given | {
        "image": image,
        "description": description,
        "timeout_seconds": timeout,
        "memory_mb": memory,
        "env": _env(env),
    }
    return {key: value for key, value in fields.items() if value is not None}


def _show(session: Session, function: dict[str, Any]) -> None:
    if session.json_mode:
        session.out.data(function)
        return
    env = function.get("env") or {}
    session.out.fields(
        {
            "name": function.get("name"),
            "image": function.get("image"),
            "description": function.get("description"),
            "timeout_seconds": function.get("timeout_seconds"),
            "memory_mb": function.get("memory_mb"),
            "env": " ".join(f"{key}={value}" for key, value in sorted(env.items())),
            "updated": timestamp(function.get("updated_at")),
        }
    )


@functions_app.command()
def create(
    ctx: typer.Context,
    name: Name,
    image: Annotated[str, typer.Option(help="The Docker image to run (it needs an ENTRYPOINT)")],
    description: Description = None,
    timeout: Timeout = None,
    memory: Memory = None,
    env: Env = None,
) -> None:
    """Register a function."""
    session = session_of(ctx)
    body = _fields(image, description, timeout, memory, env, name=name)
    with session.gateway() as gateway:
        _show(session, gateway.call("POST", PATH, json=body).body)


@functions_app.command("list")
def list_functions(ctx: typer.Context) -> None:
    """Your functions."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        functions = gateway.call("GET", PATH).body
    if session.json_mode:
        session.out.data(functions)
        return
    session.out.table(
        COLUMNS,
        [
            (f["name"], f["image"], f["timeout_seconds"], f["memory_mb"], f["description"])
            for f in functions
        ],
    )


@functions_app.command()
def get(ctx: typer.Context, name: Name) -> None:
    """One function."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        _show(session, gateway.call("GET", f"{PATH}/{name}").body)


@functions_app.command()
def update(
    ctx: typer.Context,
    name: Name,
    image: Annotated[str | None, typer.Option(help="The new image")] = None,
    description: Description = None,
    timeout: Timeout = None,
    memory: Memory = None,
    env: Env = None,
) -> None:
    """Change some of a function's fields (--env replaces its whole environment)."""
    session = session_of(ctx)
    body = _fields(image, description, timeout, memory, env)
    if not body:
        raise typer.BadParameter("give at least one field to change", param_hint="options")
    with session.gateway() as gateway:
        _show(session, gateway.call("PATCH", f"{PATH}/{name}", json=body).body)


@functions_app.command()
def delete(ctx: typer.Context, name: Name) -> None:
    """Delete a function."""
    session = session_of(ctx)
    with session.gateway() as gateway:
        gateway.call("DELETE", f"{PATH}/{name}")
    if not session.json_mode:
        session.out.text(f"deleted {name}")
