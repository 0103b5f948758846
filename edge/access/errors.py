"""Refusals of the access layer. Each HTTP refusal carries ``status``, ``code`` and ``message`` (and
``headers``), mapped to the JSON error shape by one handler in edge.api.errors."""

from __future__ import annotations

from typing import Any


class AccessError(Exception):
    """Base of every refusal answered over HTTP."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class NotAuthenticated(AccessError):
    """No credential, or one that is not valid (unknown, expired, revoked, forged): 401."""

    status = 401
    code = "not_authenticated"

    def __init__(self, message: str, code: str = "not_authenticated", details: Any = None) -> None:
        super().__init__(message, details, {"WWW-Authenticate": "Bearer"})
        self.code = code


class Forbidden(AccessError):
    """A valid credential without the scope the route needs: 403 naming the scope."""

    status = 403
    code = "forbidden"


class CsrfFailed(AccessError):
    """An unsafe request authenticated by the session cookie without the session's X-CSRF-Token."""

    status = 403
    code = "csrf_failed"


class Throttled(AccessError):
    """Too many failed logins from this address or for this user: 429 with Retry-After."""

    status = 429
    code = "login_throttled"

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, int(retry_after_s + 0.999))
        super().__init__(f"too many failed logins; try again in {seconds} s", {"retry_after_s": seconds},
                         {"Retry-After": str(seconds)})


class AccessRecordError(ValueError):
    """A user or token change that cannot be made (unknown or duplicate name, bad scope, short PIN);
    nothing was changed. Over HTTP: 400/404/409 by ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class AccessConfigError(Exception):
    """The station must not start with this access configuration; the message says what to do."""
