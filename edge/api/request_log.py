"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware) that counts each request by method, route and
status and writes one request-log line: method, path, status, duration, client and the caller's identity.

Only the path is logged: never the query string, headers, cookies or bodies, which can hold credentials.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.metrics import StationMetrics

log = logging.getLogger("edge.http")


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: StationMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(scope["method"], getattr(route, "path", "unmatched"), str(status)).inc()
            if log.isEnabledFor(logging.INFO):
                self._log(scope, status, (time.perf_counter() - started) * 1000.0)

    @staticmethod
    def _log(scope: Scope, status: int, duration_ms: float) -> None:
        client = scope.get("client")
        identity = scope.get("state", {}).get("identity")
        actor = getattr(identity, "actor", None)
        method, path = scope["method"], scope["path"]
        log.info("%s %s %d %.1f ms", method, path, status, duration_ms, extra={
            "method": method, "path": path, "status": status, "duration_ms": round(duration_ms, 2),
            "client": client[0] if client else None, "identity": actor})
