"""HTTP layer of auth-service: parse, call ``service``, return a schema."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status

from auth_service import service
from auth_service.schemas import Credentials, LoginRequest, TokenOut, UserOut, ValidateOut
from auth_service.service import Clock, PasswordHasher, Revocations, TokenIssuer
from auth_service.throttle import ThrottlePolicy
from faas_common.db import SessionDep
from faas_common.errors import ServiceError
from faas_common.http import parse_json_body, validate_body
from faas_common.metrics import LOGINS
from faas_common.openapi import AUTHENTICATED, JSON_BODY, error_response, merge
from faas_common.security import CurrentUser, public_jwk

router = APIRouter(prefix="/auth", tags=["auth"])


async def _hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


async def _issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.issuer
    return issuer


async def _throttle(request: Request) -> ThrottlePolicy:
    policy: ThrottlePolicy = request.app.state.throttle
    return policy


async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _revocations(request: Request) -> Revocations:
    revocations: Revocations = request.app.state.revocations
    return revocations


HasherDep = Annotated[PasswordHasher, Depends(_hasher)]
IssuerDep = Annotated[TokenIssuer, Depends(_issuer)]
ThrottleDep = Annotated[ThrottlePolicy, Depends(_throttle)]
ClockDep = Annotated[Clock, Depends(_clock)]
RevocationsDep = Annotated[Revocations, Depends(_revocations)]

_DATABASE = error_response(
    503,
    "The database is unavailable; see Retry-After",
    code="service_unavailable",
    detail="A dependency of this service is unavailable",
)
_REGISTER_ERRORS = merge(
    JSON_BODY,
    error_response(
        409,
        "Username already registered (in any letter case)",
        code="username_taken",
        detail="Username already registered",
    ),
    _DATABASE,
)
_LOGIN_ERRORS = merge(
    JSON_BODY,
    error_response(
        401,
        "Unknown user or wrong password (the same answer for both)",
        code="invalid_credentials",
        detail="Incorrect username or password",
    ),
    error_response(
        429,
        "Too many failed logins for this account: wait Retry-After seconds",
        code="login_throttled",
        detail="Too many failed logins for this account: try again later",
    ),
    _DATABASE,
)
_REVOCATION = error_response(
    503,
    "Token revocation (NATS) or the database is unavailable: try again",
    code="revocation_unavailable",
    detail="Token revocation (NATS) is unavailable: try again",
)
_LOGOUT_ERRORS = merge(
    AUTHENTICATED,
    error_response(
        400,
        "The token has no id (jti) and cannot be revoked on its own",
        code="token_not_revocable",
        detail="This token has no id (jti) and cannot be revoked on its own",
    ),
    error_response(
        429,
        "Too many logouts for this account: wait Retry-After seconds",
        code="logout_throttled",
        detail="Too many logouts for this account: try again later",
    ),
    _REVOCATION,
)
_DELETE_ERRORS = merge(
    AUTHENTICATED,
    error_response(
        404,
        "The account is already deleted",
        code="account_not_found",
        detail="This account no longer exists",
    ),
    _REVOCATION,
)


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=_REGISTER_ERRORS,
)
async def register(
    body: Credentials, session: SessionDep, hasher: HasherDep, revocations: RevocationsDep
) -> UserOut:
    user = await service.register(
        session, hasher, revocations, username=body.username, password=body.password
    )
    return UserOut(id=user.id, username=user.username)


async def _login_request(request: Request) -> LoginRequest:
    """The login body: JSON (any Content-Type) or an OAuth2 password-grant form."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    data: Any
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        data = {key: value for key, value in form.items() if isinstance(value, str)}
    else:
        data = parse_json_body(await request.body())
    return validate_body(LoginRequest, data)


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                    },
                }
            },
        },
    }
}


@router.post("/login", responses=_LOGIN_ERRORS, openapi_extra=_LOGIN_BODY)
async def login(
    request: Request,
    session: SessionDep,
    hasher: HasherDep,
    issuer: IssuerDep,
    throttle: ThrottleDep,
    clock: ClockDep,
    revocations: RevocationsDep,
) -> TokenOut:
    body = await _login_request(request)
    try:
        user = await service.authenticate(
            session,
            hasher,
            throttle,
            revocations,
            username=body.username,
            password=body.password,
            now=clock(),
        )
    except ServiceError as exc:
        LOGINS.labels(result=exc.code).inc()  # invalid_credentials, login_throttled, ...
        raise
    LOGINS.labels(result="succeeded").inc()
    issued = issuer.issue(user)
    return TokenOut(access_token=issued.token, expires_in=issued.expires_in)


@router.get("/validate", responses=AUTHENTICATED)
async def validate(user: CurrentUser) -> ValidateOut:
    return ValidateOut(user_id=user.user_id, username=user.username, expires_at=user.expires_at)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the presented token on every service (the user's other tokens stay valid)",
    responses=_LOGOUT_ERRORS,
)
async def logout(
    user: CurrentUser,
    session: SessionDep,
    throttle: ThrottleDep,
    clock: ClockDep,
    revocations: RevocationsDep,
) -> Response:
    await service.logout(session, throttle, revocations, claims=user, now=clock())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/users/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the caller's account: its functions, every token; the name is free again",
    responses=_DELETE_ERRORS,
)
async def delete_me(
    user: CurrentUser, session: SessionDep, clock: ClockDep, revocations: RevocationsDep
) -> Response:
    now = datetime.fromtimestamp(clock(), UTC)
    await service.delete_account(session, revocations, user_id=user.user_id, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/.well-known/jwks.json", summary="Public keys that verify platform tokens")
async def jwks(issuer: IssuerDep) -> dict[str, list[dict[str, Any]]]:
    return {"keys": [public_jwk(issuer.public_key)]}
