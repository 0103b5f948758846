"""The outbox: what the station still owes the plant, written in the same transaction as each record.

A store listener inserts one row per message while the record's transaction is open, so a record and its
outbox rows commit together or not at all (a SIGKILL or power cut can lose neither alone). Each destination
(a *sink*: mqtt, webhook) delivers rows in id order and moves its cursor in ``outbox_sinks``; rows that every
active sink has delivered are deleted in the same small transaction, through the store's single writer."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass

from edge.store import RecordEvent, VerdictStore
from edge.store.chain import utc_now
from edge.upstream.payloads import messages_for

MAX_REPLAY = 10_000  # verdicts one replay request may queue again

_INSERT = "INSERT INTO outbox (topic, idempotency_key, payload, created_at) VALUES (?, ?, ?, ?)"


class OutboxListener:
    """Store listener: the messages of every change, into the outbox, inside the change's transaction."""

    def __init__(self, station_id: str, on_write: Callable[[], None] | None = None) -> None:
        self.station_id = station_id
        self._on_write = on_write

    def __call__(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        messages = messages_for(conn, self.station_id, event)
        if not messages:
            return
        now = utc_now()
        conn.executemany(_INSERT, [(m.kind, m.idempotency_key, m.encode(), now) for m in messages])
        if self._on_write is not None:
            self._on_write()


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str  # the sub-topic (verdicts, batches, alarms, overrides)
    idempotency_key: str
    payload: str  # JSON text, sent as it was stored


class Outbox:
    """Reads pending rows (each thread its own read connection) and records deliveries through the writer."""

    def __init__(self, store: VerdictStore, active_sinks: Iterable[str]) -> None:
        self.store = store
        self.active_sinks = tuple(active_sinks)
        self.written = threading.Event()  # set by the listener: something new may be waiting

    def notify(self) -> None:
        self.written.set()

    def delivered_id(self, sink: str) -> int:
        """The last id ``sink`` delivered (0: none yet, so everything still in the outbox is owed to it)."""
        row = self.store.reader().execute("SELECT delivered_id FROM outbox_sinks WHERE sink = ?", (sink,)).fetchone()
        return 0 if row is None else int(row[0])

    def pending(self, after_id: int, limit: int) -> list[OutboxRow]:
        rows = self.store.reader().execute(
            "SELECT id, topic, idempotency_key, payload FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit))
        return [OutboxRow(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def depth(self, after_id: int) -> int:
        """How many rows wait for a sink whose cursor is ``after_id``."""
        return int(self.store.reader().execute("SELECT COUNT(*) FROM outbox WHERE id > ?", (after_id,)).fetchone()[0])

    def mark_delivered(self, sink: str, delivered_id: int) -> Future[int]:
        """Move ``sink``'s cursor to ``delivered_id`` and prune what every active sink has delivered; the
        Future gives the number of rows deleted, once durable."""
        active = self.active_sinks

        def operation(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO outbox_sinks (sink, delivered_id, delivered_at) VALUES (?, ?, ?)"
                         " ON CONFLICT(sink) DO UPDATE SET delivered_id = MAX(delivered_id, excluded.delivered_id),"
                         " delivered_at = excluded.delivered_at", (sink, delivered_id, utc_now()))
            marks = ", ".join("?" * len(active))
            rows = conn.execute(f"SELECT sink, delivered_id FROM outbox_sinks WHERE sink IN ({marks})",
                                active).fetchall()
            if len(rows) < len(active):  # an active sink has delivered nothing yet: everything is still owed
                return 0
            floor = min(int(r[1]) for r in rows)
            return conn.execute("DELETE FROM outbox WHERE id <= ?", (floor,)).rowcount

        return self.store.submit(operation)

    def replay(self, station_id: str, from_id: int, to_id: int) -> Future[int]:
        """Queue the verdicts ``from_id``..``to_id`` again (same payloads and idempotency keys), for a consumer
        that found them missing (a broker that crashed after acknowledging them); the Future gives how many."""
        to_id = min(to_id, from_id + MAX_REPLAY - 1)

        def operation(conn: sqlite3.Connection) -> int:
            ids = tuple(int(r[0]) for r in conn.execute(
                "SELECT id FROM verdicts WHERE id BETWEEN ? AND ? ORDER BY id", (from_id, to_id)))
            now = utc_now()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                messages = messages_for(conn, station_id, RecordEvent("verdicts", "stored", chunk))
                conn.executemany(_INSERT, [(m.kind, m.idempotency_key, m.encode(), now) for m in messages])
            self.notify()
            return len(ids)

        return self.store.submit(operation)
