"""RequestGuard: pure ASGI middleware refusing DNS-rebinding Host headers and cross-site unsafe requests.

- ``Host`` must be an IP literal, ``localhost``, this machine's hostname or one of
  ``access.allowed_hosts``; otherwise 421 ``host_not_allowed``. (A page on evil.example whose name
  was re-pointed at the station would otherwise read and drive the API with the browser as proxy.)
- An unsafe method (POST, PUT, PATCH, DELETE) with ``Sec-Fetch-Site: cross-site``, or with an
  ``Origin`` whose host and port differ from ``Host``, gets 403 ``cross_site_request``. Clients that
  are not browsers send neither header and pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from edge.access.control import SAFE_METHODS

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def split_host(value: str, default_port: int) -> tuple[str, int] | None:
    """``name[:port]`` or ``[v6][:port]`` -> (lower-case name without brackets, port); None if malformed."""
    value = value.strip().lower()
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
        name = parts.hostname
    except ValueError:
        return None
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return name.rstrip("."), port if port is not None else default_port


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class RequestGuard:
    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        names = {"localhost", socket.gethostname()} | set(allowed_hosts)
        self.allowed = frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            status, code, message = refusal
            body = {"error": {"code": code, "message": message, "details": None}}
            if scope["type"] == "http":
                await JSONResponse(body, status_code=status)(scope, receive, send)
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, str] | None:
        scheme = scope.get("scheme", "http")
        raw_host = headers.get("host", "")
        host = split_host(raw_host, DEFAULT_PORTS.get(scheme, 80))
        if host is None or not (is_ip_literal(host[0]) or host[0] in self.allowed):
            return (421, "host_not_allowed",
                    f"the Host header {raw_host[:100]!r} does not name this station; if it is reached by that name, "
                    "add it to access.allowed_hosts in the station file")
        method = scope.get("method", "GET")
        if scope["type"] == "http" and method in SAFE_METHODS:
            return None
        if headers.get("sec-fetch-site", "").lower() == "cross-site":
            return 403, "cross_site_request", "a request from another site's page may not change anything here"
        origin = headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin) if origin != "null" else None
            origin_host = split_host(parts.netloc, DEFAULT_PORTS.get(parts.scheme, 80)) if parts else None
            expected = host
            if parts is not None and ":" not in raw_host.rsplit("]", 1)[-1]:
                # Host without a port: the default port of the origin's scheme (a TLS proxy in front works)
                expected = (host[0], DEFAULT_PORTS.get(parts.scheme, 80))
            if origin_host != expected:
                return (403, "cross_site_request",
                        f"a request from the page of {origin[:100]!r} may not change anything on this station")
        return None
