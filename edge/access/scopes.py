"""Scopes (what a credential may do) and the roles users hold.

Scopes imply others: ``admin`` > ``maintenance`` > ``operator`` > ``qms:read``; ``admin`` also
implies ``aoi:verdict``. A route declares the one scope it needs and ``grants`` applies the implications.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

Scope = Literal["qms:read", "aoi:verdict", "operator", "maintenance", "admin"]
Role = Literal["operator", "maintenance", "admin"]

QMS_READ: Scope = "qms:read"
AOI_VERDICT: Scope = "aoi:verdict"
OPERATOR: Scope = "operator"
MAINTENANCE: Scope = "maintenance"
ADMIN: Scope = "admin"

SCOPES: tuple[str, ...] = get_args(Scope)
ROLES: tuple[str, ...] = get_args(Role)

SCOPE_DESCRIPTIONS: dict[str, str] = {
    QMS_READ: "read verdicts, images, batches, alarms, line state, models and the audit trail",
    AOI_VERDICT: "post images and recordings to be judged",
    OPERATOR: "batches, overrides, alarm acknowledgement, recipe, line stop and resume (and qms:read)",
    MAINTENANCE: "models, samples, calibration (and operator)",
    ADMIN: "users, tokens and everything else",
}

# Each scope and the scopes it directly implies.
_IMPLIES: dict[str, frozenset[str]] = {
    QMS_READ: frozenset(),
    AOI_VERDICT: frozenset(),
    OPERATOR: frozenset({QMS_READ}),
    MAINTENANCE: frozenset({OPERATOR}),
    ADMIN: frozenset({MAINTENANCE, AOI_VERDICT}),
}

# A user's role is the scope of the same name.
ROLE_SCOPES: dict[str, frozenset[str]] = {role: frozenset({role}) for role in ROLES}


def expand(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes given and every scope they imply (unknown names are dropped)."""
    result: set[str] = set()
    pending = [s for s in scopes if s in _IMPLIES]
    while pending:
        scope = pending.pop()
        if scope not in result:
            result.add(scope)
            pending.extend(_IMPLIES[scope])
    return frozenset(result)


def grants(scopes: Iterable[str], needed: str) -> bool:
    """True when ``scopes`` (with their implications) include ``needed``."""
    return needed in expand(scopes)


def check_scopes(names: Iterable[str]) -> tuple[str, ...]:
    """The names in order without repeats; ValueError naming any unknown scope and the allowed ones."""
    ordered = tuple(dict.fromkeys(names))
    unknown = [n for n in ordered if n not in _IMPLIES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(SCOPES)}")
    if not ordered:
        raise ValueError(f"at least one scope is needed; allowed: {', '.join(SCOPES)}")
    return ordered


def check_role(name: str) -> str:
    if name not in ROLES:
        raise ValueError(f"unknown role {name!r}; allowed: {', '.join(ROLES)}")
    return name
