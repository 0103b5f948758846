"""Secure by default: what anonymous callers may do, and the check a station runs before serving."""

from __future__ import annotations

import ipaddress
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.access.errors import AccessConfigError
from edge.access.scopes import ADMIN, AOI_VERDICT, QMS_READ
from edge.access.tokens import list_tokens

if TYPE_CHECKING:
    from edge.config import AccessSettings, StationConfig

LOOPBACK_ANONYMOUS_SCOPES: tuple[str, ...] = (QMS_READ, AOI_VERDICT)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other address or name reaches beyond the PC."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def anonymous_scopes(settings: AccessSettings, host: str) -> tuple[str, ...]:
    """The configured anonymous scopes, or by default reading and judging on loopback, nothing beyond."""
    if settings.anonymous_scopes is not None:
        return tuple(settings.anonymous_scopes)
    return LOOPBACK_ANONYMOUS_SCOPES if is_loopback(host) else ()


def admin_credentials(conn: sqlite3.Connection) -> tuple[int, int]:
    """(active admin users, active admin-scoped tokens)."""
    users = int(conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND removed_at IS NULL").fetchone()[0])
    now = datetime.now(UTC)
    tokens = sum(1 for t in list_tokens(conn, include_revoked=False) if ADMIN in t.scopes and t.state(now) == "active")
    return users, tokens


def check_startup(config: StationConfig, conn: sqlite3.Connection, host: str | None = None,
                  config_path: Path | str | None = None) -> list[str]:
    """Lines to log at start; AccessConfigError when the API would listen beyond loopback with no way
    to administer it. ``host`` is the address actually bound (``run --host``), default ``api.host``;
    ``config_path`` the station file named in the message (default: the file the config was read from)."""
    host = host or config.api.host
    config_path = config_path or getattr(config, "source_path", None)
    scopes = anonymous_scopes(config.access, host)
    users, tokens = admin_credentials(conn)
    config_hint = f" --config {config_path}" if config_path else " --config FILE"
    if not is_loopback(host):
        if users == 0 and tokens == 0:
            raise AccessConfigError(
                f"the API is set to listen on {host}, beyond this PC, but no admin user or admin token exists, "
                "so nobody could be held to account for a change. Create the first admin with "
                f"`edge-inspect users add NAME --role admin{config_hint}` (the same --config as `run`), or listen "
                "on loopback only (api.host: 127.0.0.1).")
        lines = [f"access: API listens on {host}; every request needs a token or a session"
                 if not scopes else
                 f"access: API listens on {host} and requests WITHOUT credentials may: {', '.join(scopes)} "
                 "(access.anonymous_scopes); every other request needs a token or a session"]
        return lines
    if scopes:
        return [f"access: open on loopback ({host}) without credentials for {', '.join(scopes)}: reading and "
                "judging need no login; every other change needs a token or a session "
                "(`edge-inspect users add` / `edge-inspect tokens create`)"]
    return [f"access: loopback ({host}); every request needs a token or a session"]
