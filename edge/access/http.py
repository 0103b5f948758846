"""The session routes (browser login), route-scope introspection and one-call installation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
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
    async def whoami(request: Request, identity: Annotated[Identity, Depends(access.requires(None))]) -> SessionInfo:
        """The caller's identity and scopes (session, token or anonymous); for a session also its CSRF token."""
        cookie = request.cookies.get(SESSION_COOKIE)
        csrf = csrf_token_for(cookie) if identity.session_id is not None and cookie else None
        return _info(identity, csrf)

    @router.delete(SESSION_PATH, status_code=204, summary="Log out", response_class=Response)
    async def logout(request: Request, identity: Annotated[Identity, Depends(access.requires(QMS_READ))]) -> Response:
        """End this session (also in the database: its cookie and CSRF token are refused from now on)."""
        await access.logout(identity)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    return router


def declared_scope(route: APIRoute) -> str | None:
    """The scope a route's ``requires(...)`` dependency demands (searched through nested dependencies);
    None when it has none or requires only an identity."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop(0)
        scope = getattr(dependant.call, "required_scope", None)
        if scope is not None:
            return str(scope)
        pending.extend(dependant.dependencies)
    return None


def document_scopes(app: FastAPI) -> None:
    """Add each route's required scope to its OpenAPI operation (``x-required-scope`` and a line in the
    description). Call once after all routes are included."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for route in app.routes:
            if not isinstance(route, APIRoute) or (scope := declared_scope(route)) is None:
                continue
            for method in route.methods or ():
                operation = schema.get("paths", {}).get(route.path_format, {}).get(method.lower())
                if operation is not None:
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
