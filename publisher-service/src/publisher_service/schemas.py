"""Wire models of publisher-service.

The execution record itself is ``faas_common.contract.ExecutionRecord`` (the spawner writes it,
this service returns it as it is).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from faas_common.contract import ExecutionRecord
from faas_common.validation import FUNCTION_NAME_PATTERN

FunctionName = Annotated[
    str,
    Field(
        pattern=FUNCTION_NAME_PATTERN,
        description="The function's name (1-64 characters of [A-Za-z0-9_-])",
        examples=["hello"],
    ),
]


class PublishRequest(BaseModel):
    """Body of ``POST /publisher/publish``. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: FunctionName
    argument: StrictStr = Field(
        description="Passed to the function as its last command-line argument "
        "(at most 131071 UTF-8 bytes; no NUL characters)",
        examples=["world"],
    )
    is_async: StrictBool = Field(
        False,
        alias="async",
        description="true: answer 202 with the execution id at once and run in the background",
    )

    @field_validator("argument")
    @classmethod
    def _argv_compatible(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("NUL characters cannot be passed as a command-line argument")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("the argument must be valid Unicode (no lone surrogates)") from exc
        return value


class PublishAccepted(BaseModel):
    """Answer to an async activation (202)."""

    execution_id: str
    status_url: str = Field(description="Where to poll the execution record")


class ExecutionList(BaseModel):
    executions: list[ExecutionRecord]


class ActivationErrorBody(BaseModel):
    """An activation that did not succeed: the error and, when it exists, the record."""

    detail: str
    code: str
    execution: ExecutionRecord | None = None
