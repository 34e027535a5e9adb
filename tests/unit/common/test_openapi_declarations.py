"""Each service's OpenAPI document declares every status its routes can answer, each error with
the ``{"detail", "code"}`` schema.

``EXPECTED`` is what each route can answer, read from the code, on top of ``EDGE`` (what any
request may get before a route runs: 400 not HTTP, 408 too slow, 413 body cap, 431 headers cap,
503 too many connections): a JSON body's 400/413/422, parameters' 422, a token's 401 (and 503
when the signing keys or the revocation list cannot be read), the route's domain errors and
dependencies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from auth_service.main import create_app as create_auth_app
from publisher_service.main import create_app as create_publisher_app
from registry_service.main import create_app as create_registry_app
from tests.support.keys import RsaKeys
from tests.unit.auth.factories import make_settings as auth_settings
from tests.unit.publisher.factories import make_settings as publisher_settings
from tests.unit.registry.factories import make_settings as registry_settings

Operation = tuple[str, str]

EDGE = {400, 408, 413, 431, 503}
HEALTH = {200, 413}
READY = {200, 413, 503}
EXPECTED: dict[str, dict[Operation, set[int]]] = {
    "auth": {
        ("post", "/auth/register"): {201, 400, 409, 413, 422, 503},
        ("post", "/auth/login"): {200, 400, 401, 413, 422, 429, 503},
        ("get", "/auth/validate"): {200, 401, 413, 503},
        ("post", "/auth/logout"): {204, 400, 401, 413, 429, 503},
        ("delete", "/auth/users/me"): {204, 401, 404, 413, 503},
        ("get", "/auth/.well-known/jwks.json"): {200, 413},
        ("get", "/auth/health"): HEALTH,
        ("get", "/auth/ready"): READY,
    },
    "registry": {
        ("post", "/registry/functions"): {201, 400, 401, 403, 409, 413, 422, 503},
        ("get", "/registry/functions"): {200, 401, 413, 503},
        ("get", "/registry/functions/{name}"): {200, 401, 404, 413, 422, 503},
        ("patch", "/registry/functions/{name}"): {200, 400, 401, 403, 404, 413, 422, 503},
        ("delete", "/registry/functions/{name}"): {204, 401, 404, 413, 422, 503},
        ("post", "/registry/register"): {201, 400, 401, 403, 409, 413, 422, 503},
        ("get", "/registry/list"): {200, 401, 413, 503},
        ("get", "/registry/retrieve"): {200, 400, 401, 404, 413, 422, 503},
        ("put", "/registry/update"): {200, 400, 401, 403, 404, 413, 422, 503},
        ("delete", "/registry/delete"): {204, 400, 401, 404, 413, 422, 503},
        ("get", "/registry/health"): HEALTH,
        ("get", "/registry/ready"): READY,
    },
    "publisher": {
        ("post", "/publisher/publish"): {
            200, 202, 400, 401, 403, 404, 409, 413, 422, 429, 502, 503, 504, 507,
        },
        ("get", "/publisher/executions/{execution_id}"): {200, 401, 404, 413, 422, 429, 503},
        ("get", "/publisher/executions"): {200, 401, 413, 422, 503},
        ("get", "/publisher/health"): HEALTH,
        ("get", "/publisher/ready"): READY,
    },
}  # fmt: skip


def build_apps(tmp_path: Path, keys: RsaKeys) -> dict[str, FastAPI]:
    """The apps as their factories build them (no lifespan: the documents need none)."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    return {
        "auth": create_auth_app(auth_settings(tmp_path)),
        "registry": create_registry_app(registry_settings(database, keys.public_path)),
        "publisher": create_publisher_app(publisher_settings(keys.public_path)),
    }


@pytest.fixture
def documents(tmp_path: Path, rsa_keys: RsaKeys) -> dict[str, dict[str, Any]]:
    return {name: app.openapi() for name, app in build_apps(tmp_path, rsa_keys).items()}


def operations(document: dict[str, Any]) -> dict[Operation, dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_every_route_declares_what_it_can_answer(
    service: str, documents: dict[str, dict[str, Any]]
) -> None:
    declared = {
        key: {int(status) for status in operation["responses"]}
        for key, operation in operations(documents[service]).items()
    }
    assert declared == {key: statuses | EDGE for key, statuses in EXPECTED[service].items()}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_routes_follow_the_shared_rules(service: str, documents: dict[str, dict[str, Any]]) -> None:
    """A token's 401, a parameter's or body's 422 and a JSON body's 400 are never forgotten."""
    for key, operation in operations(documents[service]).items():
        statuses = {int(status) for status in operation["responses"]}
        assert statuses >= EDGE, key
        if operation.get("security"):
            assert {401, 503} <= statuses, key
        if operation.get("parameters") or operation.get("requestBody"):
            assert 422 in statuses, key
        if operation.get("requestBody"):
            assert 400 in statuses, key


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_every_error_has_the_error_schema(
    service: str, documents: dict[str, dict[str, Any]]
) -> None:
    document = documents[service]
    for key, operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            schema = resolve(document, response["content"]["application/json"]["schema"])
            assert {"detail", "code"} <= set(schema["properties"]), (key, status)
            assert {"detail", "code"} <= set(schema["required"]), (key, status)
            example = response["content"]["application/json"].get("example")
            if example is not None:
                assert {"detail", "code"} <= set(example), (key, status)


def declared_headers(response: dict[str, Any]) -> set[str]:
    return {name for name, header in response.get("headers", {}).items() if header["required"]}


@pytest.mark.parametrize("service", sorted(EXPECTED))
def test_errors_declare_the_headers_they_carry(
    service: str, documents: dict[str, dict[str, Any]]
) -> None:
    """401 carries WWW-Authenticate; 429 and 503 carry Retry-After (except readiness's 503)."""
    for (method, path), operation in operations(documents[service]).items():
        responses = operation["responses"]
        if "401" in responses:
            assert "WWW-Authenticate" in declared_headers(responses["401"]), (method, path)
        for status in ("429", "503"):
            if status in responses and not path.endswith("/ready"):
                assert "Retry-After" in declared_headers(responses[status]), (method, path, status)


def test_an_activation_declares_its_timing_and_location(
    documents: dict[str, dict[str, Any]],
) -> None:
    responses = documents["publisher"]["paths"]["/publisher/publish"]["post"]["responses"]
    assert declared_headers(responses["200"]) == {"Server-Timing", "X-Request-ID"}
    assert declared_headers(responses["202"]) == {"Location", "Server-Timing", "X-Request-ID"}


@pytest.mark.parametrize("service", ["auth", "registry", "publisher"])
def test_every_response_declares_the_request_id(
    service: str, documents: dict[str, dict[str, Any]]
) -> None:
    for (method, path), operation in operations(documents[service]).items():
        for status, response in operation["responses"].items():
            assert "X-Request-ID" in declared_headers(response), (method, path, status)
