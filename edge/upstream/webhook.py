"""HTTP delivery: the outbox's messages POSTed in order, in batches, as one JSON object
``{"station": ID, "messages": [...]}`` (each message exactly as MQTT carries it, with its idempotency key).
Any 2xx answer delivers the whole batch; anything else, or no answer within ``timeout_s``, fails it and the
same messages are sent again after a back-off. The receiver drops duplicates by ``idempotency_key``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

import httpx

from edge.upstream.outbox import OutboxRow
from edge.upstream.sink import Sink, SinkError


class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, url: str, station_id: str, headers: dict[str, str] | None = None,
                 timeout_s: float = 5.0) -> None:
        self.url = url
        parts = urlsplit(url)  # what messages show: no credentials in a user part or query string
        self.shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        self.station_id = station_id
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeout_s = timeout_s
        self._client: httpx.Client | None = None

    def open(self) -> None:
        if self._client is None:
            self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s), headers=self.headers)

    def deliver(self, rows: Sequence[OutboxRow]) -> None:
        assert self._client is not None, "open() first"
        # the stored JSON texts are spliced in as they are: no decoding and re-encoding per message
        body = f'{{"station":{json.dumps(self.station_id)},"messages":[{",".join(r.payload for r in rows)}]}}'
        try:
            answer = self._client.post(self.url, content=body.encode())
        except httpx.HTTPError as exc:
            raise SinkError(f"webhook {self.shown}: {type(exc).__name__}: {exc or 'no answer'}") from exc
        if not answer.is_success:
            raise SinkError(f"webhook {self.shown} answered {answer.status_code}")

    def close(self, clean: bool) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
