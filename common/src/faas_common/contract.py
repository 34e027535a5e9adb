"""The messaging contract: every subject, stream and bucket name, and the messages on them.

Producers and consumers import these names and models; nobody builds this JSON by hand.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

FUNCTIONS_BUCKET = "functions"
"""KV read model of the registry: key ``<user_id>.<function_name>``, value ``FunctionSnapshot``."""

EXECUTIONS_BUCKET = "executions"
"""KV bucket of execution records (with a TTL), for async polling and history."""

EXECUTIONS_STREAM = "EXECUTIONS"
EXEC_SUBJECT_PREFIX = "faas.exec"
SPAWNER_CONSUMER = "spawners"


def function_key(user_id: str, name: str) -> str:
    return f"{user_id}.{name}"


def exec_subject(user_id: str) -> str:
    return f"{EXEC_SUBJECT_PREFIX}.{user_id}"


class FunctionSnapshot(BaseModel):
    """What an activation needs to know about a function, as the registry last wrote it."""

    model_config = ConfigDict(frozen=True)

    id: str
    owner_id: str
    name: str
    image: str
    timeout_seconds: int
    memory_mb: int
    env: dict[str, str] = Field(default_factory=dict)
    updated_at: str
