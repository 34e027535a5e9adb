"""Domain errors of registry-service (all ``faas_common.ServiceError``).

Hierarchy::

    ServiceError
    ├── NotFound              ── FunctionNotFound      404 function_not_found
    ├── Conflict              ── FunctionExists        409 function_exists
    └── DependencyUnavailable ─┬ CatalogUnavailable    503 service_unavailable (NATS KV)
                               └ DatabaseUnavailable   503 service_unavailable
"""

from __future__ import annotations

from faas_common.errors import Conflict, DependencyUnavailable, NotFound


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
