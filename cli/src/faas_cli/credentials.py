"""Where ``faas login`` keeps its tokens: one JSON file, one entry per gateway.

The folder is ``$FAAS_CONFIG_DIR`` or the user's config dir for ``faas``
(``typer.get_app_dir``: ``~/.config/faas`` on Linux); it is made ``0700`` and the file
``credentials.json`` is written ``0600`` (a new file renamed over the old one, so a token is
never readable by others, not even for a moment, and a crash never leaves half a file).
``FAAS_TOKEN`` in the environment is used instead of a stored token.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

CONFIG_DIR_ENV = "FAAS_CONFIG_DIR"
TOKEN_ENV = "FAAS_TOKEN"  # noqa: S105 - the variable's name, not a token
FILE_NAME = "credentials.json"


@dataclass(frozen=True)
class Credentials:
    username: str
    access_token: str
    expires_at: float | None = None


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured) if configured else Path(typer.get_app_dir("faas"))


def _path() -> Path:
    return config_dir() / FILE_NAME


def _read_all() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_all(entries: dict[str, dict[str, object]]) -> None:
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    temporary = folder / f".{FILE_NAME}.{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(entries, file, indent=2)
    os.replace(temporary, _path())


def load(gateway: str) -> Credentials | None:
    """The stored login for ``gateway``, if any."""
    entry = _read_all().get(gateway)
    if not isinstance(entry, dict):
        return None
    username, token = entry.get("username"), entry.get("access_token")
    expires_at = entry.get("expires_at")
    if not isinstance(username, str) or not isinstance(token, str):
        return None
    expiry = float(expires_at) if isinstance(expires_at, int | float) else None
    return Credentials(username, token, expiry)


def save(gateway: str, credentials: Credentials) -> Path:
    entries = _read_all()
    entries[gateway] = asdict(credentials)
    _write_all(entries)
    return _path()


def forget(gateway: str) -> bool:
    """Delete the stored login for ``gateway``; whether there was one."""
    entries = _read_all()
    if entries.pop(gateway, None) is None:
        return False
    _write_all(entries)
    return True


def token_for(gateway: str) -> str | None:
    """``FAAS_TOKEN``, else the stored token for ``gateway``."""
    return os.environ.get(TOKEN_ENV) or (stored.access_token if (stored := load(gateway)) else None)
