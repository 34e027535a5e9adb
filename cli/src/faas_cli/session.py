"""One command's state: the gateway, the output mode, and the client they make."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import typer

from faas_cli import credentials
from faas_cli.client import DEFAULT_GATEWAY, Gateway
from faas_cli.output import Output


@dataclass
class Session:
    gateway_url: str = DEFAULT_GATEWAY
    json_mode: bool = False
    transport: httpx.BaseTransport | None = None
    """Replaces the network (tests pass an ``httpx.MockTransport``)."""

    @property
    def out(self) -> Output:
        return Output(json_mode=self.json_mode)

    @contextlib.contextmanager
    def gateway(self) -> Iterator[Gateway]:
        """A client for the gateway with the token of ``FAAS_TOKEN`` or ``faas login``."""
        client = Gateway(
            self.gateway_url,
            token=credentials.token_for(self.gateway_url),
            transport=self.transport,
        )
        try:
            yield client
        finally:
            client.close()


def session_of(ctx: typer.Context) -> Session:
    session = ctx.find_object(Session)
    if session is None:
        raise RuntimeError("the faas callback did not run")
    return session
