"""canonical usernames

Every username becomes its canonical form (lowercase), which must be a Docker repository path
component. Where two rows fold to the same name, the oldest account (``created_at``, then ``id``)
keeps it; every other row, and every row whose folded name is not a valid username (``a..b``,
``-x``), is renamed ``renamed-<its id in hex>``, keeping its id, password and
functions. Renamed rows are logged (old and new name) so the operator can tell their owners.
A CHECK constraint then keeps every stored name canonical.

Revision ID: 0002_auth
Revises: 0001_auth
Create Date: 2026-12-03
"""

import logging
import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_auth"
down_revision: str | None = "0001_auth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("auth.migrations")

# The rule of auth_service.schemas at the time of this migration (migrations never import it).
_USERNAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")

_user = sa.table(
    "user",
    sa.column("id", sa.String),
    sa.column("username", sa.String),
    sa.column("created_at", sa.DateTime),
)


def _valid(name: str) -> bool:
    return 3 <= len(name) <= 64 and _USERNAME.fullmatch(name) is not None


def _fold(name: str) -> str:
    return name.lower() if name.isascii() else name


def canonical_names(rows: Sequence[tuple[str, str]]) -> dict[str, str]:
    """``{id: new name}`` for rows ``(id, username)`` given oldest first."""
    taken: set[str] = set()
    names: dict[str, str] = {}
    for user_id, username in rows:
        name = _fold(username)
        if not _valid(name) or name in taken:
            name = "renamed-" + user_id.replace("-", "")
        taken.add(name)
        names[user_id] = name
    return names


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_user.c.id, _user.c.username).order_by(_user.c.created_at, _user.c.id)
    ).all()
    current: dict[str, str] = dict(rows)
    changes = {
        user_id: name
        for user_id, name in canonical_names([(row[0], row[1]) for row in rows]).items()
        if current[user_id] != name
    }
    # Two passes, so no rename collides with a name another row is about to give up.
    for user_id in changes:
        connection.execute(
            _user.update().where(_user.c.id == user_id).values(username=f"tmp-{user_id}")
        )
    for user_id, name in changes.items():
        connection.execute(_user.update().where(_user.c.id == user_id).values(username=name))
        if name.startswith("renamed-") and _fold(current[user_id]) != name:
            logger.warning(
                "username renamed: it collides with an older account or is not valid",
                extra={"user_id": user_id, "old": current[user_id], "new": name},
            )
    with op.batch_alter_table("user") as batch:
        batch.create_check_constraint(
            op.f("ck_user_username_canonical"), "username = lower(username)"
        )


def downgrade() -> None:
    with op.batch_alter_table("user") as batch:
        batch.drop_constraint(op.f("ck_user_username_canonical"), type_="check")
