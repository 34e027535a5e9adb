"""The messaging contract and the execution records import without the web or database stack:
the spawner installs neither (``faas-common`` without extras)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("fastapi", "starlette", "sqlalchemy", "alembic", "asyncpg", "aiosqlite", "jwt")


def test_the_contract_and_the_records_load_no_web_or_database_library() -> None:
    code = (
        "import sys, faas_common.contract, faas_common.executions, faas_common.nats, "
        "faas_common.settings, faas_common.logging, faas_common.validation, faas_common.images, "
        "faas_common.kvwatch, faas_common.revocation; "
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_the_spawner_loads_no_web_or_database_library() -> None:
    code = (
        "import sys, spawner_service.worker, spawner_service.app; "
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({HEAVY!r})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
