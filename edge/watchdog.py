"""systemd service notification: READY=1 once the API serves, WATCHDOG=1 only while the pipeline makes progress.

The protocol is one datagram per message to the Unix socket named by $NOTIFY_SOCKET (sd_notify(3)); it is
a few lines with the standard library, so no client library is needed. Without $NOTIFY_SOCKET (not run by
systemd) nothing is sent and no thread is started.

"Progress" is judged per component, so that a station with no parts arriving keeps beating while a hung one
does not:
- the HTTP event loop: uvicorn calls ``loop_tick`` from the loop about once a second; no tick, no beat;
- the SQLite writer: a no-op operation is queued and must commit; an idle writer commits it at once, a stuck
  one (blocked disk, a lock held elsewhere) never does;
- replay sources: they must deliver (or refuse) a frame every ``interval_s``; a running source whose counters
  stand still is stuck in a read or a judgement. Triggered sources (the line's camera) wait for parts and are
  judged through the writer and loop only.
A component counts as hung once it has shown no progress for ``stall_s`` (default: half of WatchdogSec).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.store import StoreUnavailableError, VerdictStore
from vision.sources import FolderReplaySource, FrameSource

log = logging.getLogger(__name__)


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send one sd_notify message; False when there is no socket to send it to (or sending failed)."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("systemd notification %r not sent: %s", message.split("\n")[0], exc)
        return False
    return True


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """systemd's WatchdogSec in seconds when it asks this process for heartbeats, else None."""
    env = environ if environ is not None else os.environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


class SourceProgress(Protocol):
    """What the watchdog reads of a source's runner (edge.runner.SourceRunner)."""

    source: FrameSource
    judged: int
    failures: int

    @property
    def running(self) -> bool: ...


@dataclass
class _LastCount:
    count: int = -1
    since: float = 0.0


@dataclass
class PipelineWatchdog:
    """Checks the pipeline every ``period_s`` and beats while every component progresses."""

    store: VerdictStore
    runners: Sequence[SourceProgress]
    stall_s: float
    period_s: float
    send: Callable[[str], bool] = notify
    _loop_tick: float = field(default_factory=time.monotonic)
    _writer_done: float = field(default_factory=time.monotonic)
    _probe: Future[None] | None = None
    _sources: dict[int, _LastCount] = field(default_factory=dict)
    _serving: bool = False  # the event loop ticked: uvicorn finished its start-up and listens
    _ready_sent: bool = False
    _last_problems: list[str] = field(default_factory=list)  # component names, for logging changes only
    _stopping_sent: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @classmethod
    def from_environment(cls, store: VerdictStore, runners: Sequence[SourceProgress]) -> PipelineWatchdog | None:
        """The watchdog systemd asked for, or None when not run as a notify service."""
        if not os.environ.get("NOTIFY_SOCKET"):
            return None
        interval = watchdog_interval_s()
        # Without WatchdogSec only READY/STOPPING are sent; checks still run (and log) at a 30 s pace.
        stall = interval / 2 if interval else 30.0
        return cls(store, runners, stall_s=stall, period_s=min(max(stall / 4, 0.2), 5.0),
                   send=notify if interval else _ready_only)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` telling systemd STOPPING=1 as its shutdown begins (the last moment: uvicorn re-raises
        SIGTERM once shut down, and the process ends there)."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "lifespan":
                return await app(scope, receive, send)

            async def receive_lifespan() -> Message:
                message = await receive()
                if message["type"] == "lifespan.shutdown":
                    self.stop()
                return message

            return await app(scope, receive_lifespan, send)

        return wrapped

    async def loop_tick(self) -> None:
        """Called from the event loop (uvicorn's callback_notify): the loop is turning."""
        self._loop_tick = time.monotonic()
        self._serving = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="systemd-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._send_stopping()

    def _send_stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = notify("STOPPING=1")

    def problems(self, now: float) -> list[str]:
        """What shows no progress now (empty: healthy), as "component: detail"; queues the next writer probe."""
        found: list[str] = []
        if self._serving and now - self._loop_tick > self.stall_s:  # start-up is systemd's TimeoutStartSec
            found.append(f"HTTP event loop: no turn for {now - self._loop_tick:.0f} s")
        found += self._check_writer(now)
        found += self._check_sources(now)
        return found

    def _check_writer(self, now: float) -> list[str]:
        probe = self._probe
        if probe is not None and probe.done():
            if probe.exception() is None:
                self._writer_done = now
            probe = self._probe = None
        if probe is None:
            # queue full or stopped: no progress is recorded, the age below decides
            with contextlib.suppress(StoreUnavailableError):
                self._probe = self.store.submit(_noop)
        age = now - self._writer_done
        return [f"verdict store writer: no commit for {age:.0f} s"] if age > self.stall_s else []

    def _check_sources(self, now: float) -> list[str]:
        found = []
        for runner in self.runners:
            if not isinstance(runner.source, FolderReplaySource) or not runner.running:
                continue  # ended by itself, or stopped with an alarm after repeated crashes
            count = runner.judged + runner.failures
            seen = self._sources.setdefault(id(runner), _LastCount())
            if count != seen.count:
                seen.count, seen.since = count, now
            elif now - seen.since > self.stall_s + runner.source.interval_s:
                found.append(f"source {runner.source.name}: no frame for {now - seen.since:.0f} s")
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            now = time.monotonic()
            found = self.problems(now)
            components = [problem.split(":")[0] for problem in found]
            if components != self._last_problems:
                if found:
                    log.error("pipeline not progressing, systemd watchdog heartbeat withheld: %s", "; ".join(found))
                else:
                    log.info("pipeline progressing again: heartbeat resumed")
                self._last_problems = components
            if found:
                self.send("STATUS=hung: " + "; ".join(found))
                continue
            if not self._serving:
                continue
            if not self._ready_sent:
                self._ready_sent = notify("READY=1\nSTATUS=serving")
            self.send("WATCHDOG=1")


def _noop(conn: object) -> None:
    del conn


def _ready_only(message: str) -> bool:
    """Send status lines but no heartbeats (the unit set no WatchdogSec)."""
    return notify(message) if not message.startswith("WATCHDOG=") else False
