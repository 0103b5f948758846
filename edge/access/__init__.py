"""Access control: who may do what over the API, and the users and tokens behind it.

Scopes (``edge.access.scopes``): ``qms:read`` read everything; ``aoi:verdict`` post verdicts;
``operator`` batches, overrides, alarm ack, recipe, line stop/resume (implies qms:read);
``maintenance`` models, samples, calibration (implies operator); ``admin`` everything. A user's role
(operator, maintenance, admin) is the scope of that name. ``grants(scopes, needed)`` applies the
implications.

Wiring a station (after ``station.start()``)::

    access = AccessControl.from_config(config, station.store, host=bound_host)
    @router.post("/x")
    async def x(identity: Identity = Depends(access.requires(OPERATOR))): ...   # identity.actor -> audit
    install(app, access)   # Host/cross-site guard, /api/v1/session routes, scopes in OpenAPI

and before serving: ``for line in check_startup(config, conn, host, config_path): log.info(line)``
(raises AccessConfigError beyond loopback without an admin).

Refusals raise ``AccessError`` subclasses (``status``, ``code``, ``message``, ``details``, ``headers``):
401 NotAuthenticated (no, unknown, expired or revoked credential), 403 Forbidden (missing scope,
named), 403 CsrfFailed, 429 Throttled. User and token changes raise AccessRecordError (400/404/409).

Library functions take a ``sqlite3.Connection`` inside an open transaction and audit in it:
``add_user``, ``remove_user``, ``create_token``, ``revoke_token``; reads: ``list_users``,
``find_user``, ``list_tokens``, ``find_token``.
"""

from edge.access.control import CSRF_HEADER, SESSION_COOKIE, AccessControl, AccessStore
from edge.access.errors import (
    AccessConfigError,
    AccessError,
    AccessRecordError,
    CsrfFailed,
    Forbidden,
    NotAuthenticated,
    Throttled,
)
from edge.access.guard import RequestGuard
from edge.access.hashing import HashParameters, PinHasher
from edge.access.http import (
    SESSION_PATH,
    UNSCOPED_ROUTES,
    build_router,
    declared_scope,
    document_scopes,
    install,
    operation_scopes,
)
from edge.access.identity import Identity
from edge.access.scopes import (
    ADMIN,
    AOI_VERDICT,
    MAINTENANCE,
    OPERATOR,
    QMS_READ,
    ROLES,
    SCOPES,
    Role,
    Scope,
    expand,
    grants,
)
from edge.access.startup import anonymous_scopes, check_startup, is_loopback
from edge.access.tokens import Token, create_token, find_token, list_tokens, parse_duration, revoke_token
from edge.access.users import User, add_user, find_user, list_users, remove_user

__all__ = [
    "ADMIN", "AOI_VERDICT", "CSRF_HEADER", "MAINTENANCE", "OPERATOR", "QMS_READ", "ROLES", "SCOPES", "SESSION_COOKIE",
    "SESSION_PATH", "UNSCOPED_ROUTES", "AccessConfigError", "AccessControl", "AccessError", "AccessRecordError",
    "AccessStore", "CsrfFailed", "Forbidden", "HashParameters", "Identity", "NotAuthenticated", "PinHasher",
    "RequestGuard", "Role", "Scope", "Throttled", "Token", "User", "add_user", "anonymous_scopes", "build_router",
    "check_startup", "create_token", "declared_scope", "document_scopes", "expand", "find_token", "find_user",
    "grants", "install", "is_loopback", "list_tokens", "list_users", "operation_scopes", "parse_duration",
    "remove_user", "revoke_token",
]
