"""Users: a name, a role and an argon2-hashed PIN or password. Writes run inside the caller's open
transaction (the store's writer or a CLI ``BEGIN IMMEDIATE``) and audit themselves in it."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from edge.access.errors import AccessRecordError
from edge.access.scopes import check_role
from edge.store.chain import append_audit, utc_now

NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,64}$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    created_at: str
    created_by: str
    removed_at: str | None = None
    removed_by: str | None = None

    @property
    def active(self) -> bool:
        return self.removed_at is None


def check_name(name: str, what: str = "user") -> str:
    if not _NAME.fullmatch(name):
        raise AccessRecordError(f"{what} name {name!r} is not allowed: 1 to 64 letters, digits or _ . @ -")
    return name


_COLUMNS = "id, name, role, created_at, created_by, removed_at, removed_by"


def _user(row: sqlite3.Row) -> User:
    return User(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), row[5], row[6])


def add_user(conn: sqlite3.Connection, actor: str, name: str, role: str, pin_hash: str) -> User:
    """Add an active user; AccessRecordError for a taken name or an unknown role. ``pin_hash`` comes
    from ``PinHasher.hash(pin)``, run before the transaction: argon2 is slow on purpose, and inside the
    writer's transaction it would hold up every verdict."""
    check_name(name)
    try:
        check_role(role)
    except ValueError as exc:
        raise AccessRecordError(str(exc)) from exc
    if not pin_hash.startswith("$argon2"):
        raise AccessRecordError("pin_hash must be an argon2 hash from PinHasher.hash, never the PIN itself")
    if find_user(conn, name) is not None:
        raise AccessRecordError(f"user {name!r} exists already (remove it first to replace it)", 409)
    now = utc_now()
    user_id = conn.execute(
        "INSERT INTO users (name, role, secret_hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
        (name, role, pin_hash, now, actor),
    ).lastrowid
    append_audit(conn, actor, "user_added", "user", name, after={"name": name, "role": role})
    return User(int(user_id or 0), name, role, now, actor)


def remove_user(conn: sqlite3.Connection, actor: str, name: str) -> User:
    """Mark an active user removed and end their sessions; AccessRecordError 404 when there is none."""
    user = find_user(conn, name)
    if user is None:
        raise AccessRecordError(f"no active user {name!r}", 404)
    now = utc_now()
    conn.execute("UPDATE users SET removed_at = ?, removed_by = ? WHERE id = ?", (now, actor, user.id))
    ended = conn.execute("UPDATE sessions SET ended_at = ? WHERE user_name = ? AND ended_at IS NULL",
                         (now, name)).rowcount
    append_audit(conn, actor, "user_removed", "user", name, before={"name": name, "role": user.role},
                 details={"sessions_ended": ended})
    return User(user.id, user.name, user.role, user.created_at, user.created_by, now, actor)


def find_user(conn: sqlite3.Connection, name: str) -> User | None:
    """The active user of that name, or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM users WHERE name = ? AND removed_at IS NULL",
                       (name,)).fetchone()
    return None if row is None else _user(row)


def user_secret(conn: sqlite3.Connection, name: str) -> tuple[User, str] | None:
    """The active user and their stored hash (for login only; never leaves this package)."""
    row = conn.execute(f"SELECT {_COLUMNS}, secret_hash FROM users WHERE name = ? AND removed_at IS NULL",
                       (name,)).fetchone()
    return None if row is None else (_user(row), str(row[7]))


def list_users(conn: sqlite3.Connection, include_removed: bool = False) -> list[User]:
    where = "" if include_removed else "WHERE removed_at IS NULL"
    return [_user(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM users {where} ORDER BY id")]


def update_hash(conn: sqlite3.Connection, user_id: int, new_hash: str) -> None:
    """Store a rehash of the same PIN under new argon2 parameters (the login's audit record says so)."""
    conn.execute("UPDATE users SET secret_hash = ? WHERE id = ? AND removed_at IS NULL", (new_hash, user_id))
