"""Serving the API with uvicorn, guarded against slow and greedy clients, with TLS when configured.

uvicorn has no deadline for reading a request (a client trickling one byte a second keeps its connection
for ever) and no cap on open connections that acts before a request is complete. ``guarded_protocol``
adds both to uvicorn's httptools protocol: a deadline for each request's head and one for its body
(408 and close when missed), a cap on the request head's size (431), and a connection cap checked when a
connection opens (503 and close).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edge.config import ApiSettings, StationConfig

log = logging.getLogger("edge.server")


class TlsError(Exception):
    """The configured certificate or key cannot be used; the message says which file and why."""


def _canned(status: int, reason: str, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A complete HTTP response in the API's JSON error shape, for refusals made below the ASGI app."""
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(api: ApiSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the deadlines and caps of ``api``."""
    header_s, body_s = api.header_timeout_s, api.body_timeout_s
    max_head = api.max_header_kb * 1024
    max_connections = api.max_connections
    busy = _canned(503, "Service Unavailable", "too_many_connections",
                   f"the station has {max_connections} open connections (api.max_connections); retry shortly", 1)
    too_slow = _canned(408, "Request Timeout", "request_timeout",
                       f"the request did not arrive in time (api.header_timeout_s {header_s:g} s for its head, "
                       f"api.body_timeout_s {body_s:g} s for its body)")
    too_big = _canned(431, "Request Header Fields Too Large", "header_too_large",
                      f"the request head exceeds {api.max_header_kb} KiB (api.max_header_kb)")

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _head_bytes = 0  # bytes of the current request's head received so far; -1 from its end to the next one

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refused a connection from %s: %d open connections (api.max_connections)",
                            self.client[0] if self.client else "?", len(self.connections) - 1)
                self._refuse(busy)
                return
            self._arm(header_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)  # (uvicorn stops its keep-alive clock on any data)
            if self._head_bytes >= 0:  # a request's head is still incomplete after this chunk
                self._head_bytes += len(data)
                if self._head_bytes > max_head:
                    self._refuse(too_big)
                    return
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self._deadline is None and not self.transport.is_closing():
                self._arm(header_s)  # bytes that begin no request (blank lines) get no more time than a head

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_bytes = 0
            if self._deadline is None:  # a further request on a kept-alive connection starts its own clock
                self._arm(header_s)

        def on_headers_complete(self) -> None:
            self._head_bytes = -1
            self._arm(body_s)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _late(self) -> None:
            self._deadline = None
            cycle = self.cycle
            answered = cycle is not None and cycle.response_started and not cycle.response_complete
            log.info("closed a connection from %s: its request did not arrive in time",
                     self.client[0] if self.client else "?")
            if answered:  # a response is under way: its head is sent, so only closing is left
                self.transport.close()
            else:
                if cycle is not None:  # the app sees a disconnect; its own answer, if any, goes nowhere
                    cycle.disconnected = True
                    cycle.message_event.set()
                self._refuse(too_slow)

        def _refuse(self, response: bytes) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return GuardedProtocol


def tls_files(config: StationConfig) -> tuple[str, str] | None:
    """The certificate and key paths when TLS is configured, after checking they load together."""
    api = config.api
    if api.tls_certificate is None or api.tls_key is None:
        return None
    certificate, key = config.resolve(api.tls_certificate), config.resolve(api.tls_key)
    for kind, path in (("certificate", certificate), ("key", key)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise TlsError(f"cannot read the TLS {kind} {path} (api.tls_{kind}): {exc.strerror or exc}") from exc
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(certificate), str(key))
    except ssl.SSLError as exc:
        raise TlsError(f"the TLS certificate {certificate} and key {key} cannot be used together: {exc.reason or exc} "
                       "(both PEM; the key unencrypted and matching the certificate)") from exc
    return str(certificate), str(key)


def server_for(app: Any, config: StationConfig, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server for ``app`` with the station's limits and TLS; raises TlsError for unusable files."""
    api = config.api
    tls = tls_files(config)
    options: dict[str, Any] = {}
    if tls is not None:
        options = {"ssl_certfile": tls[0], "ssl_keyfile": tls[1]}
    return uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, http=guarded_protocol(api), log_level="warning", access_log=False,
        timeout_keep_alive=max(1, round(api.keep_alive_s)), timeout_graceful_shutdown=10, log_config=None,
        **options))
