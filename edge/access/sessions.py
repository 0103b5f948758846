"""Browser sessions: a random cookie secret and a CSRF token per login, both stored as SHA-256, with
an absolute expiry. A session ends at logout, at expiry, or when its user is removed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge.access.hashing import csrf_token_for, digest, new_secret
from edge.access.tokens import iso, parse_time
from edge.store.chain import append_audit, utc_now


@dataclass(frozen=True)
class Session:
    id: int
    user_name: str
    role: str
    csrf_hash: str
    created_at: str
    expires_at: str


@dataclass(frozen=True)
class NewSession:
    """What a login hands the browser once: the cookie secret and the CSRF token."""

    session: Session
    cookie_secret: str
    csrf_token: str


def open_session(conn: sqlite3.Connection, user_name: str, role: str, lifetime: timedelta,
                 client: str | None, rehashed: bool = False) -> NewSession:
    """Start a session for an authenticated user, audited as ``login``."""
    secret = new_secret()
    csrf = csrf_token_for(secret)
    now = utc_now()
    expires = iso(parse_time(now) + lifetime)
    session_id = int(conn.execute(
        "INSERT INTO sessions (secret_hash, user_name, csrf_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
        (digest(secret), user_name, digest(csrf), now, expires),
    ).lastrowid or 0)
    details: dict[str, object] = {"client": client, "expires_at": expires}
    if rehashed:
        details["pin_rehashed"] = True
    append_audit(conn, f"user:{user_name}", "login", "session", session_id, details=details)
    return NewSession(Session(session_id, user_name, role, digest(csrf), now, expires), secret, csrf)


def session_by_secret(conn: sqlite3.Connection, secret: str, now: datetime | None = None) -> Session | None:
    """The live session of this cookie secret (not ended, not expired, user still active), else None."""
    row = conn.execute(
        "SELECT s.id, s.user_name, u.role, s.csrf_hash, s.created_at, s.expires_at FROM sessions s"
        " JOIN users u ON u.name = s.user_name AND u.removed_at IS NULL"
        " WHERE s.secret_hash = ? AND s.ended_at IS NULL", (digest(secret),),
    ).fetchone()
    if row is None or parse_time(row[5]) <= (now or datetime.now(UTC)):
        return None
    return Session(int(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4]), str(row[5]))


def end_session(conn: sqlite3.Connection, session_id: int, user_name: str) -> bool:
    """End a session (audited as ``logout``); False when it had already ended."""
    ended = conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
                         (utc_now(), session_id)).rowcount
    if ended:
        append_audit(conn, f"user:{user_name}", "logout", "session", session_id)
    return bool(ended)
