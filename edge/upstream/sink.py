"""A delivery worker per destination: reads the outbox in id order, hands rows to its sink, records what was
acknowledged, and backs off exponentially while the destination is down or stalls. It never touches the
inspection path: its only writes are small cursor/prune transactions through the store's writer."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from edge.store import StoreUnavailableError
from edge.upstream.outbox import Outbox, OutboxRow

log = logging.getLogger(__name__)


class SinkError(Exception):
    """The destination failed (unreachable, refused, timed out); ``delivered`` leading rows made it first."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class Sink(ABC):
    """One destination. ``deliver`` returns only once every row is acknowledged, else raises SinkError."""

    name: str
    stopping: threading.Event = threading.Event()  # set by the worker when the station stops: end waits early

    @abstractmethod
    def open(self) -> None:
        """Connect (bounded wait); raise SinkError when the destination cannot be reached."""

    @abstractmethod
    def deliver(self, rows: Sequence[OutboxRow]) -> None:
        """Send rows in order and wait (bounded) for their acknowledgement."""

    def heartbeat(self, counters: dict[str, Any]) -> None:  # noqa: B027 - optional
        """Called while idle and after each round: a sink with a state message renews it."""

    @abstractmethod
    def close(self, clean: bool) -> None:
        """Disconnect; ``clean``: the station stops (say goodbye), else the connection failed."""


@dataclass
class Backoff:
    """Exponential back-off with jitter: first, 2 x first, ... up to longest, each scaled by 0.5-1."""

    first_s: float
    longest_s: float
    failures: int = 0

    def next_delay(self) -> float:
        delay = min(self.longest_s, self.first_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class SinkCounters:
    published: int = 0  # messages acknowledged by the destination
    failed: int = 0  # delivery rounds that failed (each failed message is sent again later)
    connect_failures: int = 0
    connected: bool = False
    delivered_id: int = 0
    depth: int = 0
    last_error: str | None = None
    last_delivered_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"published": self.published, "failed": self.failed, "connect_failures": self.connect_failures,
                "connected": self.connected, "delivered_id": self.delivered_id, "outbox_depth": self.depth,
                "last_error": self.last_error}


class SinkWorker:
    """The thread that drains the outbox into one sink."""

    def __init__(self, sink: Sink, outbox: Outbox, batch_size: int, retry_min_s: float, retry_max_s: float,
                 poll_s: float = 0.2, heartbeat_s: float = 10.0, metrics: Any = None,
                 on_depth: Callable[[str, int], None] | None = None) -> None:
        self.sink = sink
        self.outbox = outbox
        self.batch_size = batch_size
        self.backoff = Backoff(retry_min_s, retry_max_s)
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.metrics = metrics
        self.on_depth = on_depth
        self.counters = SinkCounters()
        self._stop = threading.Event()
        sink.stopping = self._stop
        self._thread = threading.Thread(target=self._run, name=f"upstream-{sink.name}", daemon=True)
        self._pending_mark: Future[int] | None = None

    @property
    def name(self) -> str:
        return self.sink.name

    def start(self) -> None:
        self.counters.delivered_id = self.outbox.delivered_id(self.name)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current round (bounded by the sink's own timeouts) and record what was delivered."""
        self._stop.set()
        self.outbox.written.set()
        if self._thread.ident is not None:
            self._thread.join(timeout_s)
        self._wait_mark(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sink.open()
            except SinkError as exc:
                if not self._stop.is_set():
                    self._failed(exc, connecting=True)
                continue
            self.counters.connected = True
            self._gauge_connected(1)
            log.info("upstream %s: connected", self.name)
            failure: SinkError | None = None
            try:
                self._drain()
            except SinkError as exc:
                failure = exc
            except Exception as exc:  # a bug or a store error must not end delivery for good
                log.exception("upstream %s: delivery failed", self.name)
                failure = SinkError(f"{type(exc).__name__}: {exc}")
            finally:
                self.counters.connected = False
                self._gauge_connected(0)
                self.sink.close(clean=self._stop.is_set() and failure is None)
            if failure is not None and not self._stop.is_set():  # closed first, then the back-off
                self._failed(failure, connecting=False)

    def _drain(self) -> None:
        last_heartbeat = 0.0
        while not self._stop.is_set():
            rows = self.outbox.pending(self.counters.delivered_id, self.batch_size)
            if rows:
                try:
                    self.sink.deliver(rows)
                except SinkError as exc:
                    if exc.delivered:
                        self._delivered(rows[: exc.delivered])
                    raise
                self._delivered(rows)
                self.backoff.reset()
            now = time.monotonic()
            if now - last_heartbeat >= self.heartbeat_s or not rows:
                self._measure_depth()
                if now - last_heartbeat >= self.heartbeat_s:
                    self.sink.heartbeat(self.counters.as_dict())
                    last_heartbeat = now
            if not rows:
                self.outbox.written.wait(self.poll_s)
                self.outbox.written.clear()

    def _delivered(self, rows: Sequence[OutboxRow]) -> None:
        self.counters.published += len(rows)
        self.counters.delivered_id = rows[-1].id
        self.counters.last_delivered_at = time.time()
        if self.metrics is not None:
            self.metrics.upstream_published.labels(self.name).inc(len(rows))
        # One small transaction per round; a mark still in the writer's queue is overtaken by the next one
        # (the cursor only moves forward), so the worker never waits for the disk here.
        try:
            self._pending_mark = self.outbox.mark_delivered(self.name, rows[-1].id)
        except StoreUnavailableError as exc:  # the station is stopping: the rows are sent again after restart
            log.warning("upstream %s: delivery of outbox id %d not recorded: %s", self.name, rows[-1].id, exc)

    def _wait_mark(self, timeout_s: float) -> None:
        if self._pending_mark is not None:
            try:
                self._pending_mark.result(timeout_s)
            except Exception as exc:  # a failed mark only means a re-send later
                log.warning("upstream %s: last delivery not recorded: %s", self.name, exc)

    def _failed(self, exc: SinkError, connecting: bool) -> None:
        self.counters.failed += 0 if connecting else 1
        self.counters.connect_failures += 1 if connecting else 0
        self.counters.last_error = str(exc)
        if self.metrics is not None:
            self.metrics.upstream_failed.labels(self.name, "connect" if connecting else "deliver").inc()
        self._measure_depth()
        delay = self.backoff.next_delay()
        level = logging.WARNING if self.backoff.failures <= 3 or self.backoff.failures % 20 == 0 else logging.DEBUG
        log.log(level, "upstream %s: %s; retrying in %.1f s (%d messages waiting)", self.name, exc, delay,
                self.counters.depth)
        self._stop.wait(delay)

    def _gauge_connected(self, value: int) -> None:
        if self.metrics is not None:
            self.metrics.upstream_connected.labels(self.name).set(value)

    def _measure_depth(self) -> None:
        try:
            self.counters.depth = self.outbox.depth(self.counters.delivered_id)
        except sqlite3.Error as exc:  # the store is closing: the figure waits for the next round
            log.debug("upstream %s: outbox depth not read: %s", self.name, exc)
            return
        if self.metrics is not None:
            self.metrics.upstream_outbox_depth.labels(self.name).set(self.counters.depth)
        if self.on_depth is not None:
            self.on_depth(self.name, self.counters.depth)
