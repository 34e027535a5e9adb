"""Wire models of auth-service."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,64}")

Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=USERNAME_PATTERN)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=1024)]


class Credentials(BaseModel):
    model_config = ConfigDict(extra="ignore")

    username: Username = Field(examples=["alice"])
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
