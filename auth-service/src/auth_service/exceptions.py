"""Domain errors of auth-service (all ``faas_common.ServiceError``)."""

from __future__ import annotations

from faas_common.errors import Conflict, Unauthorized


class UsernameTaken(Conflict):
    code = "username_taken"
    detail = "Username already registered"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    detail = "Incorrect username or password"

    def __init__(self) -> None:
        super().__init__(code=self.code)
