"""Schemathesis over the OpenAPI documents of auth-, registry- and publisher-service.

Every operation gets its documented examples, schemathesis' coverage cases (boundaries, missing
and wrong-typed values, other methods) and a bounded number of generated valid and invalid
requests (fixed seed, derandomized), sent with a real token. Each response must be documented
(status, content type, headers, body schema), none may be a server error, a request that breaks
the schema must be refused with a 4xx, a missing or wrong token must be refused, and a method a
path does not serve must be a 405 whose ``Allow`` names the methods it does.

Run alone: ``uv run --no-sync pytest -q tests/integration/openapi``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from schemathesis import APIOperation, Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.integration.openapi.platform import Platform

MAX_EXAMPLES = 25
"""Generated requests per operation, on top of its examples and coverage cases."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
]
BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


AnyCase = Case[APIOperation[Any, Any, Any, Any]]
HeadersFor = Callable[[AnyCase], dict[str, str]]
AUTHORIZATION = "Authorization"
REVOKES_THE_TOKEN = "POST /auth/logout"
DELETES_THE_USER = "DELETE /auth/users/me"


def run_schema(schema: OpenApiSchema, headers_for: HeadersFor) -> None:
    """Every operation of ``schema``; fails with each operation's first failure."""

    def check(case: AnyCase) -> None:
        # The generated bearer token is replaced by a real one, unless the case is about a
        # missing or malformed token.
        if (
            case.headers
            and AUTHORIZATION in case.headers
            and not schema.is_security_param_negated(case)
        ):
            case.headers[AUTHORIZATION] = headers_for(case)[AUTHORIZATION]
        case.call_and_validate(checks=CHECKS)

    failures: list[str] = []
    operations = 0
    for result in get_all_tests(schema=schema, test_func=check, settings=BOUNDED, given_kwargs={}):
        if not isinstance(result, Ok):
            failures.append(f"invalid schema: {result.err()}")
            continue
        operation, test = result.ok()
        operations += 1
        try:
            test()
        except Exception as exc:  # every operation runs; the failures are reported together
            failures.append(f"{operation.label}:\n{exc}")
    assert operations > 0
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def auth_headers(platform: Platform) -> HeadersFor:
    def headers_for(case: AnyCase) -> dict[str, str]:
        # These spend what they are sent with: each case gets a token of its own.
        if case.operation.label == REVOKES_THE_TOKEN:
            return platform.another_token()
        if case.operation.label == DELETES_THE_USER:
            return platform.new_user()
        return platform.auth_headers

    return headers_for


RUNS: dict[str, Callable[[Platform], HeadersFor]] = {
    "auth_api": auth_headers,
    "registry_api": lambda platform: lambda _: platform.registry_headers,
    "publisher_api": lambda platform: lambda _: platform.publisher_headers,
}


@pytest.mark.parametrize("api", sorted(RUNS))
def test_openapi_document_holds(
    api: str, platform: Platform, request: pytest.FixtureRequest
) -> None:
    schema: OpenApiSchema = request.getfixturevalue(api)
    run_schema(schema, RUNS[api](platform))
