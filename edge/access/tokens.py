"""API tokens: a name, scopes and an optional expiry. The secret (``ei_...``) is returned once by
``create_token``; only its SHA-256 is stored. Every request looks the token up again, so a revocation
made by the CLI in another process applies to the very next request."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from edge.access.errors import AccessRecordError
from edge.access.hashing import digest, new_token
from edge.access.scopes import check_scopes
from edge.access.users import check_name
from edge.store.chain import append_audit, utc_now

TokenState = Literal["active", "expired", "revoked"]

_DURATION = re.compile(r"^([1-9][0-9]{0,6})([mhdw])$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MAX_DURATION = timedelta(days=3660)


@dataclass(frozen=True)
class Token:
    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None
    revoked_by: str | None

    def state(self, now: datetime | None = None) -> TokenState:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and parse_time(self.expires_at) <= (now or datetime.now(UTC)):
            return "expired"
        return "active"


def parse_duration(text: str) -> timedelta:
    """``30m``, ``90m``, ``4h``, ``2d``, ``1w`` -> timedelta; ValueError saying what is accepted."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"expiry {text!r} is not a duration: a whole number and a unit, m (minutes), h (hours), "
                         "d (days) or w (weeks), e.g. 90m, 4h, 2d")
    duration = int(match.group(1)) * _UNITS[match.group(2)]
    if duration > MAX_DURATION:
        raise ValueError(f"expiry {text!r} is longer than {MAX_DURATION.days} days; omit --expires for no expiry")
    return duration


def parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


_COLUMNS = "id, name, scopes, created_at, created_by, expires_at, revoked_at, revoked_by"


def _token(row: sqlite3.Row) -> Token:
    return Token(int(row[0]), str(row[1]), tuple(str(row[2]).split()), str(row[3]), str(row[4]), row[5], row[6],
                 row[7])


def create_token(conn: sqlite3.Connection, actor: str, name: str, scopes: list[str] | tuple[str, ...],
                 expires_in: timedelta | None = None, expires_at: datetime | None = None) -> tuple[Token, str]:
    """Create a token; returns it with its secret, which is not stored and cannot be shown again.
    ``expires_at`` (an absolute time, possibly past) wins over ``expires_in``."""
    check_name(name, "token")
    try:
        ordered = check_scopes(scopes)
    except ValueError as exc:
        raise AccessRecordError(str(exc)) from exc
    if find_token(conn, name) is not None:
        raise AccessRecordError(f"token {name!r} exists already (revoke it first to replace it)", 409)
    now = utc_now()
    if expires_at is None and expires_in is not None:
        expires_at = parse_time(now) + expires_in
    expiry = None if expires_at is None else iso(expires_at)
    secret = new_token()
    token_id = conn.execute(
        "INSERT INTO api_tokens (name, secret_hash, scopes, created_at, created_by, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?)", (name, digest(secret), " ".join(ordered), now, actor, expiry),
    ).lastrowid
    append_audit(conn, actor, "token_created", "api_token", name,
                 after={"name": name, "scopes": list(ordered), "expires_at": expiry})
    return Token(int(token_id or 0), name, ordered, now, actor, expiry, None, None), secret


def revoke_token(conn: sqlite3.Connection, actor: str, name: str) -> Token:
    """Revoke the unrevoked token of that name (expired ones too); AccessRecordError 404 if none."""
    token = find_token(conn, name)
    if token is None:
        raise AccessRecordError(f"no unrevoked token {name!r}", 404)
    now = utc_now()
    conn.execute("UPDATE api_tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?", (now, actor, token.id))
    append_audit(conn, actor, "token_revoked", "api_token", name, before={"revoked_at": None},
                 after={"revoked_at": now}, details={"scopes": list(token.scopes)})
    return Token(token.id, token.name, token.scopes, token.created_at, token.created_by, token.expires_at, now, actor)


def find_token(conn: sqlite3.Connection, name: str) -> Token | None:
    """The unrevoked token of that name (it may have expired), or None."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE name = ? AND revoked_at IS NULL",
                       (name,)).fetchone()
    return None if row is None else _token(row)


def token_by_secret(conn: sqlite3.Connection, secret: str) -> Token | None:
    """The token (in any state) whose secret this is, looked up by its SHA-256; None when unknown."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens WHERE secret_hash = ?", (digest(secret),)).fetchone()
    return None if row is None else _token(row)


def list_tokens(conn: sqlite3.Connection, include_revoked: bool = True) -> list[Token]:
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    return [_token(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM api_tokens {where} ORDER BY id")]
