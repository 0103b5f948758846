"""Live events for the station page: a store listener hands each change to the event loop, one pump reads
the committed records and fans them out to per-client bounded queues (server-sent events, ``events.py``).

The listener runs in the writer's transaction, so it only schedules a hint (``call_soon_threadsafe``, no
I/O, no lock) and never slows a commit. The pump waits for that transaction's commit (the writer's commit
counter), then reads what was stored, so a client never sees a record that was rolled back. A client whose
queue is full is reset: its stream ends and the browser reconnects with its last verdict id, and the
missed verdicts are replayed from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge.api.schemas import VerdictRecord
from edge.store import VerdictStore
from edge.store.records import RecordEvent

log = logging.getLogger("edge.page")

QUEUE_SIZE = 512  # events per client before it is reset
REPLAY_PAGE = 500
COMMIT_WAIT_S = 5.0


@dataclass(frozen=True)
class LiveEvent:
    """One server-sent event; ``id`` only on verdicts (the verdict cursor the browser resumes from)."""

    name: str
    data: dict[str, Any]
    id: int | None = None

    def encode(self) -> bytes:
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.name}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n".encode()


RESET = LiveEvent("reset", {})


def verdict_event(verdict: Any) -> LiveEvent:
    """A stored verdict (edge.store.Verdict) in the API's VerdictRecord shape."""
    return LiveEvent("verdict", VerdictRecord.model_validate(verdict).model_dump(mode="json"), verdict.id)


@dataclass(eq=False)
class Client:
    queue: asyncio.Queue[LiveEvent] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))

    def offer(self, event: LiveEvent) -> bool:
        """Queue an event; False (and the queue reset) when the client is too slow."""
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESET)
            return False


@dataclass(frozen=True)
class _Hint:
    event: RecordEvent
    commits_before: int


class EventHub:
    """Attach to the store before it starts (``attach``); streams register clients (``connect``)."""

    def __init__(self) -> None:
        self.store: VerdictStore | None = None
        self.cursor = 0  # highest verdict id sent to the clients
        self.shutting_down: Callable[[], bool] = lambda: False  # set by the server (edge-inspect run)
        self.resets = 0
        self._clients: set[Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hints: asyncio.Queue[_Hint] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._started: asyncio.Event | None = None

    def attach(self, store: VerdictStore) -> None:
        self.store = store
        store.add_listener(self._on_record)

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- writer thread -------------------------------------------------------------------------
    def _committed(self) -> int:
        assert self.store is not None
        return self.store.writer.commits + self.store.writer.failed_commits

    def _on_record(self, _: sqlite3.Connection, event: RecordEvent) -> None:
        loop, hints = self._loop, self._hints
        if loop is None or hints is None:
            return  # no stream has been opened yet: nobody to tell
        with contextlib.suppress(RuntimeError):  # the loop has closed (server stopped)
            loop.call_soon_threadsafe(hints.put_nowait, _Hint(event, self._committed()))

    # -- event loop ----------------------------------------------------------------------------
    async def connect(self) -> Client:
        """Register a client (starting the pump on first use); its queue gets every later event."""
        if self._loop is None:  # no await before the pump exists: concurrent first clients start one pump
            assert self.store is not None, "attach the hub to the store first"
            self._hints = asyncio.Queue()
            self._started = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._pump = asyncio.create_task(self._run(), name="page-events")
        assert self._started is not None
        await self._started.wait()
        client = Client()
        self._clients.add(client)
        return client

    def disconnect(self, client: Client) -> None:
        self._clients.discard(client)

    def _broadcast(self, event: LiveEvent) -> None:
        for client in list(self._clients):
            if not client.offer(event):
                self.resets += 1
                log.info("a slow event stream client was reset (it resumes from its last verdict id)")

    async def _run(self) -> None:
        assert self._hints is not None and self._started is not None and self.store is not None
        store = self.store
        # Hints queued from here on are read against this cursor: none of their verdicts is skipped.
        self.cursor = await asyncio.to_thread(_max_verdict_id, store)
        self._started.set()
        while True:
            hints = [await self._hints.get()]
            while not self._hints.empty():
                hints.append(self._hints.get_nowait())
            deadline = time.monotonic() + COMMIT_WAIT_S
            target = max(h.commits_before for h in hints)
            while self._committed() <= target and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            try:
                await self._publish(store, hints)
            except Exception:  # a failed read must not end live updates; clients catch up on the next event
                log.exception("live event publication failed")

    async def _publish(self, store: VerdictStore, hints: list[_Hint]) -> None:
        if any(h.event.kind == "verdicts" for h in hints):
            while True:
                page = await asyncio.to_thread(store.verdicts_since, self.cursor, REPLAY_PAGE)
                for verdict in page:
                    self._broadcast(verdict_event(verdict))
                    self.cursor = verdict.id
                if len(page) < REPLAY_PAGE:
                    break
        for hint in hints:
            event = hint.event
            if event.kind == "verdicts":
                continue
            data: dict[str, Any] = {"kind": event.kind, "action": event.action, "ids": list(event.ids)}
            if event.kind in ("override", "late_answer"):
                data["verdict"] = await asyncio.to_thread(_changed_verdict, store, event)
            self._broadcast(LiveEvent("record", data))


def _max_verdict_id(store: VerdictStore) -> int:
    return int(store.reader().execute("SELECT COALESCE(MAX(id), 0) FROM verdicts").fetchone()[0])


def _changed_verdict(store: VerdictStore, event: RecordEvent) -> dict[str, Any] | None:
    """The verdict an override or late answer refers to, as it reads now."""
    verdict_id = event.ids[0] if event.ids else 0
    if event.kind == "override":
        row = store.reader().execute("SELECT verdict_id FROM overrides WHERE id = ?", (verdict_id,)).fetchone()
        verdict_id = int(row[0]) if row is not None else 0
    verdict = store.verdict(verdict_id)
    return None if verdict is None else VerdictRecord.model_validate(verdict).model_dump(mode="json")
