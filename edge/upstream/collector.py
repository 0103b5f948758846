"""The fleet collector: subscribes to the stations' topics with a persistent session (QoS 1, MQTT 5) and writes
every message exactly once into a central database.

A message is acknowledged to the broker only after the transaction holding it has committed, so a collector
killed at any moment loses nothing (the broker sends the unacknowledged messages again), and a message the broker
sends twice is dropped by the database's UNIQUE idempotency key."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.upstream.collector_db import CollectorDatabase, Incoming
from edge.upstream.topics import DEFAULT_FLEET_TOPIC, BrokerUrl

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps the collector's queue this long while it is away
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send at once (acks wait for a commit)


@dataclass
class _Received:
    generation: int  # the connection it came on: an ack on a later connection would name another message
    mid: int
    qos: int
    item: Incoming


class Collector:
    def __init__(self, url: BrokerUrl, database: CollectorDatabase, topics: tuple[str, ...] = (DEFAULT_FLEET_TOPIC,),
                 client_id: str = "edge-inspect-collector", batch_size: int = 1000, commit_interval_s: float = 0.05,
                 retry_min_s: float = 1.0, retry_max_s: float = 5.0, repair_interval_s: float = 30.0) -> None:
        self.url = url
        self.database = database
        self.topics = topics
        self.client_id = client_id
        self.batch_size = batch_size
        self.commit_interval_s = commit_interval_s
        self._queue: queue.Queue[_Received] = queue.Queue()
        self.repair_interval_s = repair_interval_s
        self._next_repair = time.monotonic() + repair_interval_s
        self._prefixes: dict[str, str] = {}  # station id -> its topic prefix, as seen in its messages
        self.replays_requested = 0
        self._stop = threading.Event()
        self._generation = 0
        self._connected = False
        self._client = self._build_client(retry_min_s, retry_max_s)
        self._writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)

    def _build_client(self, retry_min_s: float, retry_max_s: float) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTProtocolVersion.MQTTv5, manual_ack=True)
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set()
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(int(retry_min_s), int(retry_max_s))
        return client

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background: paho retries an unreachable broker and reconnects a lost one (1-5 s)."""
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self._writer.start()
        self._client.connect_async(self.url.host, self.url.port, keepalive=30, clean_start=False,
                                   properties=properties)
        self._client.loop_start()

    def stop(self) -> None:
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        self._writer.join(10)
        self.database.close()

    @property
    def connected(self) -> bool:
        """Connected and subscribed (the broker has acknowledged the subscriptions)."""
        return self._connected

    def stats(self) -> dict[str, int]:
        return {"stored": self.database.stored, "duplicates": self.database.duplicates,
                "rejected": self.database.rejected, "queued": self._queue.qsize(),
                "replays_requested": self.replays_requested}

    def _request_missing(self) -> None:
        """Ask each station for the verdicts its chain says are missing (a broker that crashed after
        acknowledging them): ``{"from_id", "to_id"}`` on ``<prefix>/replay``; they come back with the same keys."""
        self._next_repair = time.monotonic() + self.repair_interval_s
        if not self._connected:
            return
        try:
            ranges = self.database.missing_ranges()
        except Exception as exc:
            log.warning("collector: gap check failed: %s", exc)
            return
        for station, first, last in ranges:
            prefix = self._prefixes.get(station)
            if prefix is None or last < first:
                continue
            log.warning("collector: station %s verdicts %d-%d are missing; asking for them again", station, first, last)
            self._client.publish(f"{prefix}/replay", json.dumps({"from_id": first, "to_id": last}), qos=1)
            self.replays_requested += 1

    # -- MQTT callbacks (paho's network thread) ----------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("collector: broker %s refused the connection: %s", self.url, reason)
            return
        self._generation += 1
        client.subscribe([(topic, 1) for topic in self.topics])
        log.info("collector: connected to %s (session %s), subscribed to %s", self.url,
                 "resumed" if getattr(flags, "session_present", False) else "new", ", ".join(self.topics))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        refused = [str(r) for r in reasons if getattr(r, "is_failure", False)]
        if refused:
            log.error("collector: the broker refused subscriptions to %s: %s", ", ".join(self.topics),
                      ", ".join(refused))
        self._connected = True

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False
        if not self._stop.is_set():
            log.warning("collector: disconnected from %s (%s); reconnecting", self.url, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        prefix = message.topic.rsplit("/", 1)[0]
        self._prefixes[prefix.rsplit("/", 1)[-1]] = prefix
        self._queue.put(_Received(self._generation, message.mid, message.qos,
                                  Incoming(message.topic, bytes(message.payload))))

    # -- the writer: commit a batch, then acknowledge it ---------------------------------------------
    def _write_loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            if self.repair_interval_s > 0 and time.monotonic() >= self._next_repair:
                self._request_missing()
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.commit_interval_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            while True:
                try:
                    self.database.store([r.item for r in batch])
                    break
                except Exception as exc:  # nothing is acknowledged: the broker keeps the messages
                    log.error("collector: cannot store %d messages (%s); retrying", len(batch), exc)
                    if self._stop.wait(1.0):
                        return
            for received in batch:
                if received.qos > 0 and received.generation == self._generation:
                    self._client.ack(received.mid, received.qos)
