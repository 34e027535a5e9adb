"""DATABASE_PASSWORD_FILE: the database password read from a secret file into DATABASE_URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from auth_service.config import AuthSettings
from faas_common.settings import CommonSettings
from registry_service.config import RegistrySettings

URL_WITHOUT_PASSWORD = "postgresql+asyncpg://faas@postgres:5432/faas"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_PASSWORD_FILE", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)


def secret(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "db_password"
    path.write_text(content, encoding="utf-8")
    return path


def test_the_password_file_completes_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL_WITHOUT_PASSWORD)
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(secret(tmp_path, "Zq8-long-random\n")))
    url = make_url(CommonSettings().database_url)
    assert url.password == "Zq8-long-random"  # the trailing newline of the file is not part of it
    assert (url.username, url.host, url.port, url.database) == ("faas", "postgres", 5432, "faas")


def test_every_service_reading_the_database_accepts_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", URL_WITHOUT_PASSWORD)
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(secret(tmp_path, "Zq8-long-random")))
    for settings in (AuthSettings(), RegistrySettings()):
        assert make_url(settings.database_url).password == "Zq8-long-random"


def test_characters_that_need_escaping_in_a_url_survive(tmp_path: Path) -> None:
    password = "p@ss:w/rd?#%&=+ é"
    settings = CommonSettings(
        database_url=URL_WITHOUT_PASSWORD, database_password_file=secret(tmp_path, password)
    )
    assert "p@ss" not in settings.database_url  # escaped in the URL text...
    assert make_url(settings.database_url).password == password  # ...and read back intact


def test_the_file_replaces_a_password_already_in_the_url(tmp_path: Path) -> None:
    settings = CommonSettings(
        database_url="postgresql+asyncpg://faas:old-password@db/faas",
        database_password_file=secret(tmp_path, "new-long-password"),
    )
    assert make_url(settings.database_url).password == "new-long-password"


def test_without_the_file_the_url_is_unchanged() -> None:
    settings = CommonSettings(database_url="postgresql+asyncpg://faas:Zq8-long@db/faas")
    assert settings.database_url == "postgresql+asyncpg://faas:Zq8-long@db/faas"
    assert settings.database_password_file is None


def test_an_empty_variable_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", "")
    assert CommonSettings().database_password_file is None


def test_a_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValidationError, match=r"DATABASE_PASSWORD_FILE .*nope.* cannot be read"):
        CommonSettings(database_url=URL_WITHOUT_PASSWORD, database_password_file=missing)


@pytest.mark.parametrize("content", ["", "\n", "\r\n"])
def test_an_empty_file_is_refused(tmp_path: Path, content: str) -> None:
    with pytest.raises(ValidationError, match="is empty"):
        CommonSettings(
            database_url=URL_WITHOUT_PASSWORD, database_password_file=secret(tmp_path, content)
        )


def test_a_sqlite_url_has_no_password_to_take(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SQLite"):
        CommonSettings(
            database_url="sqlite+aiosqlite:///faas.db",
            database_password_file=secret(tmp_path, "Zq8-long-random"),
        )


def test_a_placeholder_password_from_the_file_is_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="placeholder password"):
        CommonSettings(
            database_url=URL_WITHOUT_PASSWORD, database_password_file=secret(tmp_path, "changeme")
        )


def test_a_placeholder_password_from_the_file_is_accepted_locally(tmp_path: Path) -> None:
    settings = CommonSettings(
        environment="local",
        database_url=URL_WITHOUT_PASSWORD,
        database_password_file=secret(tmp_path, "changeme"),
    )
    assert make_url(settings.database_url).password == "changeme"
