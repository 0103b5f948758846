"""Per-request limits, as pure ASGI middleware: a request body size cap and a per-client rate limit.

Both answer in the API's JSON error shape before the route runs: a body declared too large is refused
without reading it, one that grows too large while streaming is refused as soon as it passes the cap.
(Slow clients and the connection cap are handled below the app, in ``edge.server``.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.errors import error_response
from edge.metrics import StationMetrics

_MAX_TRACKED_CLIENTS = 4096  # rate buckets kept before idle (full) ones are forgotten


def _too_large_message(limit: int) -> str:
    return f"the request body exceeds the limit of {limit} bytes (api.max_upload_mb in the station config)"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the cap. An HTTPException, because FastAPI
    re-raises those from body parsing (it turns other errors there into 400); answered 413 too_large."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: StationMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            self.metrics.http_refused.labels("too_large").inc()
            await error_response(413, "too_large", _too_large_message(limit), headers={"connection": "close"})(
                scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.metrics.http_refused.labels("too_large").inc()
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


class RateLimit:
    """A token bucket per client address: ``per_s`` requests a second sustained, ``burst`` at once;
    429 with Retry-After beyond. ``per_s`` 0 turns it off."""

    def __init__(self, app: ASGIApp, per_s: float, burst: int, metrics: StationMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.per_s = per_s
        self.burst = float(burst)
        self.metrics = metrics
        self.buckets: dict[str, tuple[float, float]] = {}  # client address -> (tokens, when counted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.per_s <= 0:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        now = self.clock()
        tokens, then = self.buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.per_s)
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            self.metrics.http_refused.labels("rate_limited").inc()
            wait = max(1, math.ceil((1.0 - tokens) / self.per_s))
            await error_response(
                429, "rate_limited",
                f"more than {self.per_s:g} requests per second from {address} (api.rate_limit_per_s); "
                f"retry in {wait} s", headers={"retry-after": str(wait)})(scope, receive, send)
            return
        self.buckets[address] = (tokens - 1.0, now)
        if len(self.buckets) > _MAX_TRACKED_CLIENTS:
            self._forget_idle(now)
        await self.app(scope, receive, send)

    def _forget_idle(self, now: float) -> None:
        for address, (tokens, then) in list(self.buckets.items()):
            if tokens + (now - then) * self.per_s >= self.burst:
                del self.buckets[address]
