"""Who made a request, as the audit trail records it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.access.scopes import expand, grants

IdentityKind = Literal["user", "token", "anonymous"]


@dataclass(frozen=True)
class Identity:
    """An authenticated (or anonymous) caller.

    ``actor`` is what audit records and verdicts store: ``user:NAME``, ``token:NAME`` or
    ``anonymous@loopback`` (``anonymous`` on a station bound beyond loopback). ``scopes`` is the
    expanded set (implications applied). ``session_id`` is set when a session cookie authenticated it.
    """

    actor: str
    kind: IdentityKind
    name: str | None
    role: str | None
    scopes: frozenset[str]
    session_id: int | None = None
    expires_at: str | None = None

    def can(self, scope: str) -> bool:
        return grants(self.scopes, scope)

    @staticmethod
    def user(name: str, role: str, session_id: int | None = None, expires_at: str | None = None) -> Identity:
        return Identity(f"user:{name}", "user", name, role, expand([role]), session_id, expires_at)

    @staticmethod
    def token(name: str, scopes: tuple[str, ...], expires_at: str | None = None) -> Identity:
        return Identity(f"token:{name}", "token", name, None, expand(scopes), None, expires_at)

    @staticmethod
    def anonymous(scopes: tuple[str, ...] | list[str], loopback: bool = True) -> Identity:
        return Identity("anonymous@loopback" if loopback else "anonymous", "anonymous", None, None, expand(scopes))
