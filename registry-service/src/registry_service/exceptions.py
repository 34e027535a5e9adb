"""Domain errors of registry-service (all ``faas_common.ServiceError``).

Hierarchy::

    ServiceError
    ├── Forbidden             ─┬ ImageNotAllowed       403 image_not_allowed
    │                          └ QuotaExceeded         403 quota_exceeded
    ├── NotFound              ── FunctionNotFound      404 function_not_found
    ├── Conflict              ── FunctionExists        409 function_exists
    ├── Unprocessable         ─┬ ImageRegistryNotAllowed 422 image_registry_not_allowed
    │                          └ EnvTooLarge           422 env_too_large
    └── DependencyUnavailable ─┬ CatalogUnavailable    503 service_unavailable (NATS KV)
                               └ DatabaseUnavailable   503 service_unavailable
"""

from __future__ import annotations

from faas_common.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    Unprocessable,
)


class FunctionNotFound(NotFound):
    code = "function_not_found"
    detail = "Function not found"


class FunctionExists(Conflict):
    code = "function_exists"
    detail = "A function with this name already exists"


class CatalogUnavailable(DependencyUnavailable):
    detail = "The function catalog (NATS) is unavailable; nothing was changed"


class DatabaseUnavailable(DependencyUnavailable):
    detail = "The database is unavailable"


class ImageNotAllowed(Forbidden):
    code = "image_not_allowed"
    detail = "This image is not allowed for you"


class QuotaExceeded(Forbidden):
    code = "quota_exceeded"
    detail = "You have reached the maximum number of functions"


class ImageRegistryNotAllowed(Unprocessable):
    code = "image_registry_not_allowed"
    detail = (
        "The image's registry host is not allowed: it is a loopback, private, link-local or "
        "otherwise internal address, or it does not resolve"
    )


class EnvTooLarge(Unprocessable):
    code = "env_too_large"
    detail = "The function's environment is too large"
