"""The single SQLite writer: a thread that gathers operations and commits them in groups.

Each caller gets a Future that resolves only after the transaction holding its operation has
committed (WAL, synchronous=FULL), so an acknowledged record survives a killed process or a
power cut. One failing operation is rolled back to its own savepoint and fails alone.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Operation = Callable[[sqlite3.Connection], Any]


class StoreUnavailableError(RuntimeError):
    """The writer is stopped or overloaded; nothing was stored."""


@dataclass
class _Job:
    operation: Operation
    future: Future[Any]


class SqliteWriter:
    def __init__(self, conn: sqlite3.Connection, commit_interval_s: float = 0.0, max_batch: int = 1000,
                 max_queue: int = 50_000) -> None:
        self._conn = conn
        self._interval = commit_interval_s
        self._max_batch = max_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="sqlite-writer", daemon=True)
        self._stopping = False
        self.commits = 0
        self.committed_operations = 0
        self.last_commit_ms = 0.0
        self.failed_commits = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, operation: Operation, timeout_s: float = 5.0) -> Future[Any]:
        if not self.alive:
            raise StoreUnavailableError("the verdict store is not running")
        future: Future[Any] = Future()
        try:
            self._queue.put(_Job(operation, future), timeout=timeout_s)
        except queue.Full as exc:
            raise StoreUnavailableError("the verdict store is overloaded (write queue full)") from exc
        return future

    def stop(self, timeout_s: float = 10.0) -> None:
        """Commit everything queued, then stop."""
        if self._stopping:
            return
        self._stopping = True
        if self._thread.ident is None:  # never started: nothing can be queued
            return
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is None:
                break
            # Group commit: take everything that queued up during the last commit's fsync, and
            # optionally wait a little longer for more (commit_interval > 0 trades latency for batching).
            jobs = [first]
            deadline = time.monotonic() + self._interval
            while len(jobs) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    done = True
                    break
                jobs.append(job)
            self._commit(jobs)
        # drain what arrived after the stop marker
        leftovers = []
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if job is not None:
                leftovers.append(job)
        if leftovers:
            self._commit(leftovers)

    def _commit(self, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        results: list[tuple[_Job, Any, BaseException | None]] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((job, job.operation(conn), None))
                    conn.execute("RELEASE op")
                except Exception as exc:  # one bad operation must not spoil the group
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((job, None, exc))
            conn.execute("COMMIT")
        except Exception as exc:
            self.failed_commits += 1
            log.error("commit of %d operations failed: %s", len(jobs), exc)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = StoreUnavailableError(f"the verdict store could not commit: {exc}")
            for job in jobs:
                job.future.set_exception(failure)
            return
        self.commits += 1
        self.committed_operations += len(jobs)
        self.last_commit_ms = (time.perf_counter() - started) * 1000.0
        for job, result, error in results:
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)
