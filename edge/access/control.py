"""AccessControl: turns a request's credential into an Identity and checks the scope a route needs.

Credentials, in order: ``Authorization: Bearer <token>``, then the ``edge_session`` cookie, else the
anonymous identity. Tokens and sessions are read from the database at every request (microseconds:
one indexed lookup of a SHA-256), so a revocation by the CLI applies to the next request.
"""

import asyncio
import hmac
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from fastapi import Request, Security
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from edge.access.errors import CsrfFailed, Forbidden, NotAuthenticated
from edge.access.hashing import HashParameters, PinHasher, digest
from edge.access.identity import Identity
from edge.access.scopes import SCOPES
from edge.access.sessions import NewSession, Session, end_session, open_session, session_by_secret
from edge.access.startup import anonymous_scopes, is_loopback
from edge.access.throttle import LoginThrottle
from edge.access.tokens import token_by_secret
from edge.access.users import update_hash, user_secret
from edge.store.chain import append_audit

if TYPE_CHECKING:
    from edge.config import AccessSettings, StationConfig

log = logging.getLogger("edge.access")

T = TypeVar("T")
SESSION_COOKIE = "edge_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="bearer",
                           description="An API token from `edge-inspect tokens create` (ei_...).")
session_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, scheme_name="session",
                              description="The browser session from POST /api/v1/session; unsafe methods also "
                                          f"need the header {CSRF_HEADER}.")


class AccessStore(Protocol):
    """What AccessControl needs of the VerdictStore."""

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]: ...
    def reader(self) -> sqlite3.Connection: ...


class AccessControl:
    """One per station: resolves identities, checks scopes and CSRF, runs logins and logouts."""

    def __init__(self, settings: "AccessSettings", store: AccessStore, host: str) -> None:
        self.settings = settings
        self.store = store
        self.loopback = is_loopback(host)
        self.anonymous = Identity.anonymous(anonymous_scopes(settings, host), loopback=self.loopback)
        p = settings.password_hash
        self.hasher = PinHasher(HashParameters(p.time_cost, p.memory_kib, p.parallelism))
        self.throttle = LoginThrottle(settings.login_max_failures, settings.login_lockout_s,
                                      settings.login_max_lockout_s)
        self.session_lifetime = timedelta(hours=settings.session_hours)

    @classmethod
    def from_config(cls, config: "StationConfig", store: AccessStore, host: str | None = None) -> "AccessControl":
        """``host``: the address the API is bound to (``run --host``), default ``api.host``."""
        return cls(config.access, store, host or config.api.host)

    # -- per request -----------------------------------------------------------------------------
    def requires(self, scope: str | None) -> Callable[..., Awaitable[Identity]]:
        """A FastAPI dependency resolving to the caller's Identity, refusing it without ``scope``
        (None: any identity, anonymous included). Use as ``identity: Identity = Depends(access.requires("operator"))``
        or in ``dependencies=[...]``; ``declared_scope(route)`` reads the scope back."""
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; allowed: {', '.join(SCOPES)}")
        # The scope travels with the security schemes, so OpenAPI lists it in each operation's `security`.
        needed = [scope] if scope is not None else []

        async def identity(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme, scopes=needed)],
            cookie: Annotated[str | None, Security(session_scheme, scopes=needed)],
        ) -> Identity:
            who = self.identify(request, bearer, cookie)
            if scope is not None and not who.can(scope):
                if who.kind == "anonymous":
                    raise NotAuthenticated(
                        f"this needs a credential with scope '{scope}': send Authorization: Bearer <token> "
                        "or log in (POST /api/v1/session)", details={"required_scope": scope})
                raise Forbidden(f"{who.actor} lacks scope '{scope}', which this request needs",
                                details={"required_scope": scope, "granted": sorted(who.scopes)})
            request.state.identity = who
            return who

        identity.required_scope = scope  # type: ignore[attr-defined]
        return identity

    def identify(self, request: Request, bearer: HTTPAuthorizationCredentials | None,
                 cookie: str | None) -> Identity:
        """The caller's identity; NotAuthenticated for a bad credential, CsrfFailed for an unsafe
        cookie-authenticated request without the session's CSRF token."""
        if bearer is not None:
            return self._token_identity(bearer.credentials)
        if "authorization" in request.headers:
            raise NotAuthenticated("the Authorization header must be 'Bearer <token>'", code="bad_credential")
        if cookie:
            session = session_by_secret(self.store.reader(), cookie)
            if session is None:
                raise NotAuthenticated("the session cookie is not valid (ended, expired or forged): log in again",
                                       code="session_invalid")
            if request.method not in SAFE_METHODS:
                check_csrf(request, session)
            return Identity.user(session.user_name, session.role, session.id, session.expires_at)
        return self.anonymous

    def _token_identity(self, secret: str) -> Identity:
        token = token_by_secret(self.store.reader(), secret)
        if token is None:
            raise NotAuthenticated("unknown API token", code="token_invalid")
        state = token.state()
        if state == "revoked":
            raise NotAuthenticated(f"API token '{token.name}' was revoked at {token.revoked_at}", code="token_revoked")
        if state == "expired":
            raise NotAuthenticated(f"API token '{token.name}' expired at {token.expires_at}", code="token_expired")
        return Identity.token(token.name, token.scopes, token.expires_at)

    # -- login and logout ------------------------------------------------------------------------
    async def login(self, name: str, pin: str, client: str) -> NewSession:
        """Check a user's PIN (throttled; argon2 off the event loop) and open a session.
        Throttled -> 429 before any hashing; a wrong PIN or unknown user -> 401 ``login_failed``."""
        keys = [f"client:{client}", f"user:{name.lower()}"]
        newly_locked = self.throttle.begin(keys)
        found = user_secret(self.store.reader(), name)
        stored = found[1] if found is not None else None
        verified = await run_in_threadpool(self.hasher.verify, stored, pin)  # a dummy hash for unknown users
        if found is None or not verified:
            log.info("failed login for user %r from %s", name, client)
            if newly_locked:
                await self._audit_lockout(name, client, newly_locked)
            raise NotAuthenticated("wrong user name or PIN", code="login_failed")
        self.throttle.succeeded(keys)
        user, old_hash = found
        new_hash = await run_in_threadpool(self.hasher.hash, pin) if self.hasher.needs_rehash(old_hash) else None

        def operation(conn: sqlite3.Connection) -> NewSession:
            current = user_secret(conn, name)
            if current is None or current[1] != old_hash:  # removed or changed since the check
                raise NotAuthenticated("wrong user name or PIN", code="login_failed")
            if new_hash is not None:
                update_hash(conn, user.id, new_hash)
            return open_session(conn, user.name, user.role, self.session_lifetime, client, new_hash is not None)

        new = await asyncio.wrap_future(self.store.submit(operation))
        log.info("user %s logged in from %s (session %d)", user.name, client, new.session.id)
        return new

    async def logout(self, identity: Identity) -> bool:
        session_id, name = identity.session_id, identity.name
        if session_id is None or name is None:
            return False
        return await asyncio.wrap_future(self.store.submit(lambda conn: end_session(conn, session_id, name)))

    async def _audit_lockout(self, name: str, client: str, keys: list[str]) -> None:
        log.warning("login locked after %d failures: %s", self.throttle.max_failures, ", ".join(keys))
        details: dict[str, Any] = {"user": name, "client": client, "locked": keys,
                                   "failures": self.throttle.max_failures,
                                   "until": (datetime.now(UTC) + timedelta(seconds=self.settings.login_lockout_s)
                                             ).isoformat(timespec="seconds")}
        await asyncio.wrap_future(self.store.submit(
            lambda conn: append_audit(conn, "system", "login_locked", "user", name, details=details)))


def check_csrf(request: Request, session: Session) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        raise CsrfFailed(f"a request authenticated by the session cookie must send the header {CSRF_HEADER} "
                         "(the csrf_token from POST or GET /api/v1/session)")
    if not hmac.compare_digest(digest(sent), session.csrf_hash):
        raise CsrfFailed(f"the {CSRF_HEADER} header does not belong to this session")
