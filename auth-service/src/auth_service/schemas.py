"""Wire models of auth-service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)

from faas_common.validation import (
    RESERVED_USERNAMES,
    USERNAME_MAX,
    USERNAME_MIN,
    USERNAME_PATTERN,
)

USERNAME_INPUT_PATTERN = r"^[A-Za-z0-9]+(?:(?:[._]|__|-+)[A-Za-z0-9]+)*$"
"""What a client may send (the OpenAPI document's pattern): ``USERNAME_PATTERN`` before ASCII
letters are folded."""


def canonical_username(value: object) -> object:
    """ASCII letters folded to lowercase (``Alice`` is ``alice``); anything else left as it is,
    for the pattern to refuse (no Unicode folding: the Kelvin sign is not a ``k``)."""
    if isinstance(value, str) and value.isascii():
        return value.lower()
    return value


def _not_reserved(value: str) -> str:
    if value in RESERVED_USERNAMES:
        raise ValueError(
            f"the name {value!r} is reserved (an image namespace with a meaning of its own): "
            "choose another"
        )
    return value


Username = Annotated[
    str,
    BeforeValidator(canonical_username),
    StringConstraints(min_length=USERNAME_MIN, max_length=USERNAME_MAX, pattern=USERNAME_PATTERN),
    AfterValidator(_not_reserved),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: Username = Field(
        examples=["alice"],
        json_schema_extra={"pattern": USERNAME_INPUT_PATTERN},
        description="3-64 characters: lowercase letters and digits, separated by '.', '_', "
        "'__' or runs of '-'. Upper-case ASCII letters are folded to lowercase.",
    )
    password: Password = Field(examples=["correct-horse-battery"])


class LoginRequest(BaseModel):
    """Login accepts any non-empty strings: a rule violation is simply a failed login (401)."""

    model_config = ConfigDict(extra="ignore")

    username: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class UserOut(BaseModel):
    id: str
    username: str


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int


class ValidateOut(BaseModel):
    user_id: str
    username: str
    expires_at: datetime
