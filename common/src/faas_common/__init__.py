"""Shared library of the FaaS platform services. Never run on its own."""

from faas_common.contract import (
    EXECUTIONS_BUCKET,
    FUNCTIONS_BUCKET,
    IDEMPOTENCY_BUCKET,
    FunctionSnapshot,
    function_key,
)
from faas_common.db import SessionDep, make_engine, make_sessionmaker, migrate, new_metadata
from faas_common.errors import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    Forbidden,
    GatewayTimeout,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    TooManyRequests,
    Unauthorized,
    install_error_handlers,
)
from faas_common.health import health_router
from faas_common.http import PlatformMiddleware, create_service_app
from faas_common.logging import configure_logging
from faas_common.nats import NatsUnavailable, connect_nats, drain_nats, ensure_kv
from faas_common.security import (
    CurrentUser,
    TokenClaims,
    TokenVerifier,
    token_verifier_from_settings,
)
from faas_common.settings import CommonSettings, ConfigurationError
from faas_common.validation import (
    FUNCTION_NAME_PATTERN,
    ImageReference,
    ParsedImageReference,
    is_valid_image_reference,
    parse_image_reference,
)

__all__ = [
    "EXECUTIONS_BUCKET",
    "FUNCTIONS_BUCKET",
    "FUNCTION_NAME_PATTERN",
    "IDEMPOTENCY_BUCKET",
    "BadRequest",
    "CommonSettings",
    "ConfigurationError",
    "Conflict",
    "CurrentUser",
    "DependencyUnavailable",
    "Forbidden",
    "FunctionSnapshot",
    "GatewayTimeout",
    "ImageReference",
    "NatsUnavailable",
    "NotFound",
    "ParsedImageReference",
    "PayloadTooLarge",
    "PlatformMiddleware",
    "ServiceError",
    "SessionDep",
    "TokenClaims",
    "TokenVerifier",
    "TooManyRequests",
    "Unauthorized",
    "configure_logging",
    "connect_nats",
    "create_service_app",
    "drain_nats",
    "ensure_kv",
    "function_key",
    "health_router",
    "install_error_handlers",
    "is_valid_image_reference",
    "make_engine",
    "make_sessionmaker",
    "migrate",
    "new_metadata",
    "parse_image_reference",
    "token_verifier_from_settings",
]
