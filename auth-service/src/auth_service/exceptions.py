"""Domain errors of auth-service (all ``faas_common.ServiceError``).

::

    ServiceError
    ├── BadRequest ── TokenNotRevocable          400 token_not_revocable
    ├── Unauthorized ── InvalidCredentials       401 invalid_credentials
    ├── NotFound ── AccountNotFound              404 account_not_found
    ├── Conflict ── UsernameTaken                409 username_taken
    ├── TooManyRequests ── LoginThrottled        429 login_throttled (Retry-After)
    │                      └── LogoutThrottled   429 logout_throttled (Retry-After)
    └── DependencyUnavailable ── RevocationUnavailable   503 revocation_unavailable
"""

from __future__ import annotations

import math

from faas_common.errors import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    NotFound,
    TooManyRequests,
    Unauthorized,
)


class UsernameTaken(Conflict):
    code = "username_taken"
    detail = "Username already registered"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    detail = "Incorrect username or password"

    def __init__(self) -> None:
        super().__init__(code=self.code)


class LoginThrottled(TooManyRequests):
    code = "login_throttled"
    detail = "Too many failed logins for this account: try again later"

    def __init__(self, retry_after: float) -> None:
        super().__init__(headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class LogoutThrottled(LoginThrottled):
    code = "logout_throttled"
    detail = "Too many logouts for this account: try again later"


class AccountNotFound(NotFound):
    code = "account_not_found"
    detail = "This account no longer exists"


class TokenNotRevocable(BadRequest):
    code = "token_not_revocable"
    detail = "This token has no id (jti) and cannot be revoked on its own"


class RevocationUnavailable(DependencyUnavailable):
    code = "revocation_unavailable"
    detail = "Token revocation (NATS) is unavailable: try again"
