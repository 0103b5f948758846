"""The session routes (browser login), route-scope introspection and one-call installation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from edge.access.control import CSRF_HEADER, SESSION_COOKIE, AccessControl
from edge.access.guard import RequestGuard
from edge.access.hashing import MAX_PIN_LENGTH, csrf_token_for
from edge.access.identity import Identity
from edge.access.scopes import QMS_READ
from edge.access.users import NAME_PATTERN

SESSION_PATH = "/api/v1/session"
# Routes that change state without a scope: logging in is how a caller gets one.
UNSCOPED_ROUTES = frozenset({("POST", SESSION_PATH)})


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(pattern=NAME_PATTERN, max_length=64, description="User name (`edge-inspect users add`).")
    pin: str = Field(min_length=1, max_length=MAX_PIN_LENGTH, description="The user's PIN or password.")


class SessionInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    actor: str = Field(description="How the audit trail records this caller: user:NAME, token:NAME or anonymous.")
    kind: str = Field(description="user (session), token or anonymous.", pattern="^(user|token|anonymous)$")
    user: str | None = Field(None, description="User or token name; none for anonymous.", max_length=64)
    role: str | None = Field(None, description="The user's role (operator, maintenance, admin).")
    scopes: list[str] = Field(description="Every scope granted, implications included.")
    csrf_token: str | None = Field(None, description=f"Send as {CSRF_HEADER} with every unsafe request of this "
                                                     "session; only for session callers.")
    expires_at: str | None = Field(None, description="When the session or token expires (ISO 8601 UTC).")


def _info(identity: Identity, csrf_token: str | None = None) -> SessionInfo:
    return SessionInfo(actor=identity.actor, kind=identity.kind, user=identity.name, role=identity.role,
                       scopes=sorted(identity.scopes), csrf_token=csrf_token, expires_at=identity.expires_at)


def build_router(access: AccessControl) -> APIRouter:
    router = APIRouter(tags=["session"])
    # Depends() as defaults: annotations are strings here (PEP 563) and cannot name these locals.
    anyone, reader = Depends(access.requires(None)), Depends(access.requires(QMS_READ))

    @router.post(SESSION_PATH, response_model=SessionInfo, summary="Log in (browser session)",
                 responses={401: {"description": "wrong user name or PIN"},
                            429: {"description": "too many failed logins; see Retry-After"}})
    async def login(body: LoginRequest, request: Request, response: Response) -> SessionInfo:
        """Check the PIN and set the HttpOnly, SameSite=Strict session cookie. Keep `csrf_token`:
        unsafe requests of this session must send it as the X-CSRF-Token header."""
        client = request.client.host if request.client else "unknown"
        new = await access.login(body.user, body.pin, client)
        response.set_cookie(SESSION_COOKIE, new.cookie_secret, max_age=int(access.session_lifetime.total_seconds()),
                            path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
        identity = Identity.user(new.session.user_name, new.session.role, new.session.id, new.session.expires_at)
        return _info(identity, new.csrf_token)

    @router.get(SESSION_PATH, response_model=SessionInfo, summary="Who am I")
    async def whoami(request: Request, identity: Identity = anyone) -> SessionInfo:
        """The caller's identity and scopes (session, token or anonymous); for a session also its CSRF token."""
        cookie = request.cookies.get(SESSION_COOKIE)
        csrf = csrf_token_for(cookie) if identity.session_id is not None and cookie else None
        return _info(identity, csrf)

    @router.delete(SESSION_PATH, status_code=204, summary="Log out", response_class=Response)
    async def logout(request: Request, identity: Identity = reader) -> Response:
        """End this session (also in the database: its cookie and CSRF token are refused from now on)."""
        await access.logout(identity)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    return router


def declared_scope(route: Any) -> str | None:
    """The scope a route's ``requires(...)`` dependency demands, searched through nested dependencies
    (an APIRoute, or anything with a ``dependant``); None when it has none or requires only an identity."""
    dependant = getattr(route, "dependant", None)
    pending = list(dependant.dependencies) if dependant is not None else []
    while pending:
        current = pending.pop(0)
        scope = getattr(current.call, "required_scope", None)
        if scope is not None:
            return str(scope)
        pending.extend(current.dependencies)
    return None


def operation_scope(operation: dict[str, Any]) -> str | None:
    """The scope an OpenAPI operation declares: the scopes listed with its security schemes."""
    scopes = {scope for requirement in operation.get("security", []) for names in requirement.values()
              for scope in names}
    return " ".join(sorted(scopes)) or None


def operation_scopes(app: FastAPI) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> the scope it declares, for every operation in the app's OpenAPI schema."""
    return {(method.upper(), path): operation_scope(operation)
            for path, operations in app.openapi().get("paths", {}).items()
            for method, operation in operations.items() if isinstance(operation, dict)}


def document_scopes(app: FastAPI) -> None:
    """Spell each operation's scope out in OpenAPI: ``x-required-scope`` and a line in its description
    (the scope is already in its ``security`` requirements)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                scope = operation_scope(operation) if isinstance(operation, dict) else None
                if scope is not None:
                    operation["x-required-scope"] = scope
                    note = f"Requires scope `{scope}`."
                    operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, access: AccessControl) -> None:
    """Everything at once: the Host/cross-site guard, the session routes, scopes in OpenAPI.
    Call after the other routers are included."""
    app.add_middleware(RequestGuard, allowed_hosts=access.settings.allowed_hosts)
    app.include_router(build_router(access))
    document_scopes(app)
