"""MQTT delivery (paho-mqtt): QoS 1 publishes under the station's prefix, a retained ``state`` message
(online with counters, or offline) and a last will that says offline when the station vanishes.

Every wait is bounded: the TCP connect and the broker's CONNACK by ``connect_timeout_s``, each round of
publishes by ``ack_timeout_s``. A broker that stalls fails the round; the connection is dropped and the same
rows are sent again after a back-off (the consumer drops the duplicates by their idempotency key)."""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt

from edge.store.chain import utc_now
from edge.upstream.outbox import OutboxRow
from edge.upstream.sink import Sink, SinkError
from edge.upstream.topics import REPLAY, STATE, BrokerUrl

log = logging.getLogger(__name__)


class MqttSink(Sink):
    name = "mqtt"

    def __init__(self, url: BrokerUrl, prefix: str, station_id: str, client_id: str, keepalive_s: int = 30,
                 connect_timeout_s: float = 5.0, ack_timeout_s: float = 10.0, max_inflight: int = 500,
                 on_replay: Callable[[int, int], None] | None = None) -> None:
        self.url = url
        self.prefix = prefix
        self.station_id = station_id
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self.max_inflight = max_inflight
        self.on_replay = on_replay
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._refused: str | None = None

    def topic(self, kind: str) -> str:
        return f"{self.prefix}/{kind}"

    def _state(self, state: str, counters: dict[str, Any] | None = None) -> str:
        body: dict[str, Any] = {"state": state, "station": self.station_id, "at": utc_now()}
        if counters is not None:
            body["counters"] = counters
        return json.dumps(body, separators=(",", ":"))

    # -- connection ------------------------------------------------------------------------------
    def open(self) -> None:
        # A fresh client per connection: nothing queued for a dead connection is ever re-sent by paho itself;
        # the outbox decides what is sent again.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             reconnect_on_failure=False)
        client.connect_timeout = self.connect_timeout_s
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.will_set(self.topic(STATE), self._state("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._connected.clear()
        self._lost.clear()
        self._refused = None
        self._client = client
        try:
            client.connect(self.url.host, self.url.port, keepalive=self.keepalive_s)
        except (OSError, ValueError) as exc:
            self._client = None
            raise SinkError(f"broker {self.url} unreachable: {exc}") from exc
        client.loop_start()
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._connected.wait(0.1) and time.monotonic() < deadline and not self.stopping.is_set():
            pass
        if not self._connected.is_set() or self._lost.is_set():
            reason = self._refused or f"no answer to CONNECT within {self.connect_timeout_s:g} s"
            self.close(clean=False)
            raise SinkError(f"broker {self.url}: {reason}")
        self._publish_state("online", None)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._refused = f"connection refused ({reason})"
            self._lost.set()
        elif self.on_replay is not None:
            client.subscribe(self.topic(REPLAY), qos=1)
        self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """A replay request: ``{"from_id": A, "to_id": B}``, verdict ids a consumer found missing."""
        try:
            body = json.loads(message.payload)
            first, last = int(body["from_id"]), int(body["to_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("upstream: ignored a malformed replay request on %s", message.topic)
            return
        if self.on_replay is not None and 0 < first <= last:
            self.on_replay(first, last)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._lost.set()
        self._connected.set()

    def close(self, clean: bool) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if clean and not self._lost.is_set():
            # an orderly stop says offline itself: a clean DISCONNECT does not fire the will
            with contextlib.suppress(RuntimeError, ValueError):
                client.publish(self.topic(STATE), self._state("offline"), qos=1, retain=True).wait_for_publish(
                    min(2.0, self.ack_timeout_s))
        client.disconnect()
        client.loop_stop()

    # -- delivery --------------------------------------------------------------------------------
    def deliver(self, rows: Sequence[OutboxRow]) -> None:
        client = self._require_client()
        infos = [client.publish(self.topic(row.topic), row.payload, qos=1) for row in rows]
        deadline = time.monotonic() + self.ack_timeout_s
        for done, info in enumerate(infos):
            # in short slices: a connection lost meanwhile fails the round at once, not after ack_timeout_s
            while not info.is_published() and not self._lost.is_set() and time.monotonic() < deadline:
                if self.stopping.is_set():
                    raise SinkError(f"broker {self.url}: station stopping", delivered=done)
                try:
                    info.wait_for_publish(min(0.1, max(0.0, deadline - time.monotonic())))
                except (RuntimeError, ValueError) as exc:
                    raise SinkError(f"broker {self.url}: publish failed: {exc}", delivered=done) from exc
            if self._lost.is_set() and not info.is_published():
                raise SinkError(f"broker {self.url}: connection lost", delivered=done)
            if not info.is_published():
                raise SinkError(f"broker {self.url}: {len(infos) - done} of {len(infos)} messages not acknowledged "
                                f"within {self.ack_timeout_s:g} s", delivered=done)
        if self._lost.is_set():  # everything was acknowledged, but the next round needs a new connection
            raise SinkError(f"broker {self.url}: connection lost", delivered=len(infos))

    def heartbeat(self, counters: dict[str, Any]) -> None:
        if self._lost.is_set():
            raise SinkError(f"broker {self.url}: connection lost")
        self._publish_state("online", counters)

    def _publish_state(self, state: str, counters: dict[str, Any] | None) -> None:
        client = self._require_client()
        info = client.publish(self.topic(STATE), self._state(state, counters), qos=1, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            raise SinkError(f"broker {self.url}: state not sent ({mqtt.error_string(info.rc)})")

    def _require_client(self) -> mqtt.Client:
        if self._client is None or self._lost.is_set():
            raise SinkError(f"broker {self.url}: not connected")
        return self._client
