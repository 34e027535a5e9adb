"""Wire models of registry-service: limits, request bodies, the function as returned.

Unknown fields are ignored. Integers are JSON Schema's (``30`` and ``30.0`` are a timeout;
``30.5``, ``"30"`` and ``true`` are not). In an update a field may be omitted (left as it is)
but not ``null``: every field of a function has a value. Free text (``description``, env
values) may not contain NUL characters: PostgreSQL cannot store them and no process environment
can hold them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from faas_common.validation import FUNCTION_NAME_PATTERN, ImageReference, IntegralNumber
from registry_service.service import FunctionChanges

NAME_PATTERN = FUNCTION_NAME_PATTERN
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

DEFAULT_TIMEOUT_SECONDS = 30
DEFAULT_MEMORY_MB = 128
MAX_ENV_ENTRIES = 64

FunctionName = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(description="1-64 characters of [A-Za-z0-9_-]", examples=["hello"]),
]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters (\\u0000)")
    return value


NoNul = AfterValidator(_no_nul)
Description = Annotated[str, StringConstraints(max_length=1024), NoNul]
Image = Annotated[
    ImageReference,
    Field(description="Docker image reference", examples=["library/python:3.11-slim"]),
]
TimeoutSeconds = Annotated[
    int, Field(strict=True, ge=1, le=900, description="1-900 seconds"), IntegralNumber
]
MemoryMb = Annotated[
    int, Field(strict=True, ge=16, le=4096, description="16-4096 MiB"), IntegralNumber
]
EnvName = Annotated[str, StringConstraints(max_length=256, pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, StringConstraints(max_length=4096), NoNul]


def _names_as_property_names(schema: JsonDict) -> None:
    """Every key must be a variable name: ``propertyNames``, not ``patternProperties`` (which
    would let any other key through)."""
    by_pattern = schema.pop("patternProperties", None)
    if not isinstance(by_pattern, dict) or len(by_pattern) != 1:
        return
    ((pattern, value_schema),) = by_pattern.items()
    names = schema.get("propertyNames")
    schema["propertyNames"] = {**(names if isinstance(names, dict) else {}), "pattern": pattern}
    schema["additionalProperties"] = value_schema


Env = Annotated[
    dict[EnvName, EnvValue],
    Field(
        max_length=MAX_ENV_ENTRIES,
        description=f"At most {MAX_ENV_ENTRIES} variables; names match {ENV_NAME_PATTERN}",
        json_schema_extra=_names_as_property_names,
    ),
]


def _omit_null(schema: JsonDict) -> None:
    """Document optional update fields as what they accept: a value, never null."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    for prop in properties.values():
        if not isinstance(prop, dict):
            continue
        any_of = prop.get("anyOf")
        if isinstance(any_of, list):
            kept = [option for option in any_of if option != {"type": "null"}]
            if len(kept) == 1 and isinstance(kept[0], dict):
                del prop["anyOf"]
                prop.update({key: value for key, value in kept[0].items() if key not in prop})
        if "default" in prop and prop["default"] is None:
            del prop["default"]


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be omitted, but not null")
    return value


class FunctionCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    description: Description = ""
    image: Image
    timeout_seconds: TimeoutSeconds = DEFAULT_TIMEOUT_SECONDS
    memory_mb: MemoryMb = DEFAULT_MEMORY_MB
    env: Env = Field(default_factory=dict)


class _FunctionChangesBody(BaseModel):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_omit_null)

    description: Description | None = None
    image: Image | None = None
    timeout_seconds: TimeoutSeconds | None = None
    memory_mb: MemoryMb | None = None
    env: Env | None = None

    @field_validator("description", "image", "timeout_seconds", "memory_mb", "env", mode="before")
    @classmethod
    def _reject_null(cls, value: Any) -> Any:
        return _not_null(value)

    def changes(self) -> FunctionChanges:
        return FunctionChanges(
            description=self.description,
            image=self.image,
            timeout_seconds=self.timeout_seconds,
            memory_mb=self.memory_mb,
            env=self.env,
        )


class FunctionPatch(_FunctionChangesBody):
    """Any subset of the fields. ``name`` may be repeated but not changed."""

    name: FunctionName | None = Field(
        None, description="Optional; when given it must be the name in the path"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _reject_null_name(cls, value: Any) -> Any:
        return _not_null(value)


class RegisterAlias(BaseModel):
    """Seed-compatible body of ``POST /registry/register``: ``payload`` is the image."""

    model_config = ConfigDict(extra="ignore")

    name: FunctionName
    description: Description = ""
    payload: Image | None = Field(None, description="The image reference (seed name of `image`)")
    image: Image | None = Field(None, description="Accepted instead of `payload`")
    timeout_seconds: TimeoutSeconds = DEFAULT_TIMEOUT_SECONDS
    memory_mb: MemoryMb = DEFAULT_MEMORY_MB
    env: Env = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_image(self) -> RegisterAlias:
        if self.payload is None and self.image is None:
            raise ValueError("payload (the image reference) is required")
        if self.payload is not None and self.image is not None and self.payload != self.image:
            raise ValueError("payload and image name different images: give one of them")
        return self

    def to_create(self) -> FunctionCreate:
        image = self.image if self.image is not None else self.payload
        assert image is not None
        return FunctionCreate(
            name=self.name,
            description=self.description,
            image=image,
            timeout_seconds=self.timeout_seconds,
            memory_mb=self.memory_mb,
            env=self.env,
        )


class UpdateAlias(_FunctionChangesBody):
    """Seed-compatible body of ``PUT /registry/update``: the name plus the fields to change."""

    name: FunctionName
    payload: Image | None = Field(None, description="The new image (seed name of `image`)")

    @field_validator("payload", mode="before")
    @classmethod
    def _reject_null_payload(cls, value: Any) -> Any:
        return _not_null(value)

    @model_validator(mode="after")
    def _one_image(self) -> UpdateAlias:
        if self.payload is not None and self.image is not None and self.payload != self.image:
            raise ValueError("payload and image name different images: give one of them")
        return self

    def changes(self) -> FunctionChanges:
        base = super().changes()
        if self.payload is None:
            return base
        return FunctionChanges(
            description=base.description,
            image=self.payload,
            timeout_seconds=base.timeout_seconds,
            memory_mb=base.memory_mb,
            env=base.env,
        )


class NameBody(BaseModel):
    """Body of the seed aliases that name one function (``GET retrieve``, ``DELETE delete``)."""

    model_config = ConfigDict(extra="ignore")

    name: FunctionName


class FunctionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    description: str
    image: str
    timeout_seconds: int
    memory_mb: int
    env: dict[str, str]
    created_at: datetime
    updated_at: datetime
