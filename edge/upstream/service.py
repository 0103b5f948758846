"""The station's upstream link, wired from the ``upstream`` section: the outbox listener on the store, and one
delivery worker per configured destination (MQTT, webhook)."""

from __future__ import annotations

import logging
from typing import Any

from edge.config import UpstreamSettings
from edge.store import StoreUnavailableError, VerdictStore
from edge.upstream.mqtt import MqttSink
from edge.upstream.outbox import Outbox, OutboxListener
from edge.upstream.sink import Sink, SinkWorker
from edge.upstream.topics import BrokerUrl, station_prefix
from edge.upstream.webhook import WebhookSink

log = logging.getLogger(__name__)

BACKLOG_ALARM = "upstream_backlog"


class Upstream:
    """Attach before the store starts (the listener must see every record), start after, stop before it closes."""

    def __init__(self, settings: UpstreamSettings, station_id: str, metrics: Any = None,
                 poll_s: float = 0.2) -> None:
        self.settings = settings
        self.station_id = station_id
        self.metrics = metrics
        self.poll_s = poll_s
        self.prefix = station_prefix(station_id, settings.topic_root, settings.site, settings.line)
        self.sinks: list[Sink] = []
        if settings.mqtt_url is not None:
            self.sinks.append(MqttSink(BrokerUrl.parse(settings.mqtt_url), self.prefix, station_id,
                                       settings.client_id or f"edge-inspect-{station_id}", settings.keepalive_s,
                                       settings.connect_timeout_s, settings.ack_timeout_s, settings.max_inflight,
                                       self._replay))
        if settings.webhook is not None:
            hook = settings.webhook
            self.sinks.append(WebhookSink(hook.url, station_id, hook.headers, hook.timeout_s))
        self.store: VerdictStore | None = None
        self.outbox: Outbox | None = None
        self.workers: list[SinkWorker] = []
        self._alarmed = False

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    def attach(self, store: VerdictStore) -> None:
        """Register the outbox listener (before ``store.start()``)."""
        if not self.enabled:
            return
        self.store = store
        self.outbox = Outbox(store, [s.name for s in self.sinks])
        store.add_listener(OutboxListener(self.station_id, self.outbox.notify))

    def start(self) -> None:
        if self.outbox is None or self.store is None:
            return
        self._alarmed = any(a.kind == BACKLOG_ALARM for a in self.store.alarms(active_only=True))
        batch_sizes = {"webhook": self.settings.webhook.batch_size if self.settings.webhook else 0}
        for sink in self.sinks:
            worker = SinkWorker(sink, self.outbox, batch_sizes.get(sink.name) or self.settings.batch_size,
                                self.settings.retry_min_s, self.settings.retry_max_s, self.poll_s,
                                self.settings.state_interval_s, self.metrics, self._watch_depth)
            worker.start()
            self.workers.append(worker)
        log.info("upstream: %s, topics under %s/", ", ".join(self._describe(s) for s in self.sinks), self.prefix)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def status(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "sinks": {w.name: w.counters.as_dict() for w in self.workers}}

    def _replay(self, from_id: int, to_id: int) -> None:
        """A consumer asked for verdicts again (paho's thread: queue the work, never wait for it here)."""
        if self.outbox is None:
            return
        log.info("upstream: verdicts %d-%d requested again", from_id, to_id)
        try:
            self.outbox.replay(self.station_id, from_id, to_id)
        except StoreUnavailableError as exc:
            log.warning("upstream: replay of verdicts %d-%d not queued: %s", from_id, to_id, exc)

    def _describe(self, sink: Sink) -> str:
        return f"MQTT {sink.url}" if isinstance(sink, MqttSink) else f"webhook {getattr(sink, 'shown', '')}"

    def _watch_depth(self, sink: str, depth: int) -> None:
        """Alarm (once) when the backlog passes the configured size; clear it once it is under 90 % again."""
        if self.store is None:
            return
        limit = self.settings.outbox_alarm_rows
        try:
            if depth > limit and not self._alarmed:
                self.store.raise_alarm(
                    BACKLOG_ALARM, f"{depth} records wait for delivery to {sink} (alarm size {limit}): the "
                    "destination has been unreachable a long time. Nothing is dropped; check the network and the "
                    "broker, and the free disk space of the data folder.", "warning", "upstream")
                self._alarmed = True
            elif depth < 0.9 * limit and self._alarmed:
                self.store.clear_alarms(BACKLOG_ALARM, "upstream")
                self._alarmed = False
        except StoreUnavailableError:
            pass
