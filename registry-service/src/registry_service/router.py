"""HTTP layer of registry-service: parse, call ``service``, return a schema.

``/registry/functions`` is the REST API; ``register``, ``list``, ``retrieve``, ``update`` and
``delete`` are the seed-compatible aliases of the same operations.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from faas_common.db import SessionDep
from faas_common.http import parse_json_body, validate_body
from faas_common.openapi import AUTHENTICATED, JSON_BODY, PARAMETERS, error_response, merge
from faas_common.security import CurrentUser, TokenClaims
from registry_service import service
from registry_service.admission import Admission
from registry_service.catalog import FunctionCatalog
from registry_service.models import Function
from registry_service.schemas import (
    NAME_PATTERN,
    FunctionCreate,
    FunctionOut,
    FunctionPatch,
    NameBody,
    RegisterAlias,
    UpdateAlias,
)

router = APIRouter(prefix="/registry", tags=["functions"])


async def _catalog(request: Request) -> FunctionCatalog:
    catalog: FunctionCatalog = request.app.state.catalog
    return catalog


async def _admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


CatalogDep = Annotated[FunctionCatalog, Depends(_catalog)]
AdmissionDep = Annotated[Admission, Depends(_admission)]
FunctionNamePath = Annotated[str, Path(pattern=NAME_PATTERN, description="The function's name")]


_NOT_FOUND = error_response(
    404,
    "No function of the caller has this name",
    code="function_not_found",
    detail="Function not found",
)
_EXISTS = error_response(
    409,
    "The caller already has a function with this name",
    code="function_exists",
    detail="A function with this name already exists",
)
_UNAVAILABLE = error_response(
    503,
    "The database or the function catalog (NATS) is unavailable; nothing was changed",
    code="service_unavailable",
    detail="The function catalog (NATS) is unavailable; nothing was changed",
)
_IMAGE_NOT_ALLOWED = error_response(
    403,
    "The image is not allowed for the caller (IMAGE_POLICY: image_not_allowed)",
    code="image_not_allowed",
    detail="Image 'bob/x' is not allowed: use an image under your own namespace (alice/...) "
    "or one the operator allows",
)
_CREATE_FORBIDDEN = error_response(
    403,
    "The image is not allowed for the caller (IMAGE_POLICY: image_not_allowed), or the caller "
    "has MAX_FUNCTIONS_PER_USER functions already (quota_exceeded)",
    code="quota_exceeded",
    detail="You already have 100 functions, the most one user may have: delete one first",
)
_CREATE_ERRORS = merge(AUTHENTICATED, JSON_BODY, _CREATE_FORBIDDEN, _EXISTS, _UNAVAILABLE)
_READ_ERRORS = merge(AUTHENTICATED, PARAMETERS, _NOT_FOUND)
_UPDATE_ERRORS = merge(AUTHENTICATED, JSON_BODY, _IMAGE_NOT_ALLOWED, _NOT_FOUND, _UNAVAILABLE)
_DELETE_ERRORS = merge(AUTHENTICATED, PARAMETERS, _NOT_FOUND, _UNAVAILABLE)
_BY_NAME_ERRORS = merge(AUTHENTICATED, JSON_BODY, _NOT_FOUND)
"""The aliases that read the name from a JSON body (by hand) or ``?name=``."""


def _out(function: Function) -> FunctionOut:
    return FunctionOut.model_validate(function)


async def _create(
    body: FunctionCreate,
    user: TokenClaims,
    session: SessionDep,
    catalog: FunctionCatalog,
    admission: Admission,
) -> FunctionOut:
    function = await service.create_function(
        session,
        catalog,
        admission,
        owner_id=user.user_id,
        username=user.username,
        name=body.name,
        description=body.description,
        image=body.image,
        timeout_seconds=body.timeout_seconds,
        memory_mb=body.memory_mb,
        env=body.env,
    )
    return _out(function)


# --- REST -------------------------------------------------------------------------------------


@router.post(
    "/functions",
    status_code=status.HTTP_201_CREATED,
    summary="Register a function",
    responses=_CREATE_ERRORS,
)
async def create_function(
    body: FunctionCreate,
    user: CurrentUser,
    session: SessionDep,
    catalog: CatalogDep,
    admission: AdmissionDep,
) -> FunctionOut:
    return await _create(body, user, session, catalog, admission)


@router.get(
    "/functions", summary="List the caller's functions (sorted by name)", responses=AUTHENTICATED
)
async def list_functions(user: CurrentUser, session: SessionDep) -> list[FunctionOut]:
    functions = await service.list_functions(session, owner_id=user.user_id)
    return [_out(function) for function in functions]


@router.get(
    "/functions/{name}", summary="Get one of the caller's functions", responses=_READ_ERRORS
)
async def get_function(
    name: FunctionNamePath, user: CurrentUser, session: SessionDep
) -> FunctionOut:
    return _out(await service.get_function(session, owner_id=user.user_id, name=name))


@router.patch(
    "/functions/{name}",
    summary="Change any subset of a function's fields (not its name)",
    responses=_UPDATE_ERRORS,
)
async def update_function(
    name: FunctionNamePath,
    body: FunctionPatch,
    user: CurrentUser,
    session: SessionDep,
    catalog: CatalogDep,
    admission: AdmissionDep,
) -> FunctionOut:
    if body.name is not None and body.name != name:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("body", "name"),
                    "msg": "the name of a function cannot be changed",
                    "input": body.name,
                }
            ]
        )
    function = await service.update_function(
        session,
        catalog,
        admission,
        owner_id=user.user_id,
        username=user.username,
        name=name,
        changes=body.changes(),
    )
    return _out(function)


@router.delete(
    "/functions/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a function",
    responses=_DELETE_ERRORS,
)
async def delete_function(
    name: FunctionNamePath, user: CurrentUser, session: SessionDep, catalog: CatalogDep
) -> Response:
    await service.delete_function(session, catalog, owner_id=user.user_id, name=name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- Seed-compatible aliases ------------------------------------------------------------------

aliases = APIRouter(prefix="/registry", tags=["seed-compatible aliases"])

NameQuery = Annotated[
    str | None,
    Query(
        pattern=NAME_PATTERN,
        description="The function's name, when the request has no JSON body naming it",
    ),
]
_NAME_OBJECT = {
    key: value for key, value in NameBody.model_json_schema().items() if key != "required"
}
_OPTIONAL_NAME_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "description": 'Optional: a JSON object; its `"name"` takes precedence over `?name=`',
        "content": {"application/json": {"schema": _NAME_OBJECT}},
    }
}


async def _alias_name(request: Request, query_name: str | None) -> str:
    """The function name of ``retrieve``/``delete``: the JSON body's ``name``, else ``?name=``.

    A body, when there is one, is a JSON object (anything else is a 422, not ignored)."""
    raw = await request.body()
    data: Any = None
    if raw.strip():
        data = parse_json_body(raw)
        if not isinstance(data, dict):
            raise RequestValidationError(
                [{"type": "dict_type", "loc": ("body",), "msg": "Input should be a JSON object"}]
            )
    if isinstance(data, dict) and "name" in data:
        return validate_body(NameBody, data).name
    if query_name is not None:
        return query_name
    raise RequestValidationError(
        [
            {
                "type": "missing",
                "loc": ("query", "name"),
                "msg": 'Field required: the function name, as ?name= or in a JSON body {"name"}',
                "input": None,
            }
        ]
    )


@aliases.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    summary="Register a function (alias of POST /registry/functions; payload = image)",
    responses=_CREATE_ERRORS,
)
async def register_alias(
    body: RegisterAlias,
    user: CurrentUser,
    session: SessionDep,
    catalog: CatalogDep,
    admission: AdmissionDep,
) -> FunctionOut:
    return await _create(body.to_create(), user, session, catalog, admission)


@aliases.get(
    "/list",
    summary="List the caller's functions (alias of GET /registry/functions)",
    responses=AUTHENTICATED,
)
async def list_alias(user: CurrentUser, session: SessionDep) -> list[FunctionOut]:
    return await list_functions(user, session)


@aliases.get(
    "/retrieve",
    summary="Get a function by name, from the JSON body or ?name= "
    "(alias of GET /registry/functions/{name})",
    responses=_BY_NAME_ERRORS,
    openapi_extra=_OPTIONAL_NAME_BODY,
)
async def retrieve_alias(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    name: NameQuery = None,
) -> FunctionOut:
    function_name = await _alias_name(request, name)
    return _out(await service.get_function(session, owner_id=user.user_id, name=function_name))


@aliases.put(
    "/update",
    summary="Change a function named in the body; payload = image "
    "(alias of PATCH /registry/functions/{name})",
    responses=_UPDATE_ERRORS,
)
async def update_alias(
    body: UpdateAlias,
    user: CurrentUser,
    session: SessionDep,
    catalog: CatalogDep,
    admission: AdmissionDep,
) -> FunctionOut:
    function = await service.update_function(
        session,
        catalog,
        admission,
        owner_id=user.user_id,
        username=user.username,
        name=body.name,
        changes=body.changes(),
    )
    return _out(function)


@aliases.delete(
    "/delete",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a function by name, from the JSON body or ?name= "
    "(alias of DELETE /registry/functions/{name})",
    responses=merge(_BY_NAME_ERRORS, _UNAVAILABLE),
    openapi_extra=_OPTIONAL_NAME_BODY,
)
async def delete_alias(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    catalog: CatalogDep,
    name: NameQuery = None,
) -> Response:
    function_name = await _alias_name(request, name)
    await service.delete_function(session, catalog, owner_id=user.user_id, name=function_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
