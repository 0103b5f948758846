"""systemd's notify protocol against a real `edge-inspect run`: READY once serving, heartbeats while idle,
none while the verdict store's writer is stuck behind a lock another process holds, heartbeats again once
it is released; and the progress rules of edge.watchdog on a real store and replay source."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from support import EDGE_INSPECT, PROJECT_ROOT, free_port, write_station_config

from edge.store import VerdictStore
from edge.watchdog import PipelineWatchdog, notify, watchdog_interval_s
from vision.sources import FolderReplaySource

WATCHDOG_S = 2.0  # WatchdogSec as systemd would pass it: stall limit 1 s, a check every 0.25 s


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="notify-")  # short: a socket path has at most 107 bytes
    path = os.path.join(folder, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(folder)


def receive(sock: socket.socket, seconds: float) -> list[str]:
    """Every message that arrives within ``seconds``."""
    messages: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return messages


def wait_for(sock: socket.socket, prefix: str, seconds: float) -> list[str]:
    """Messages up to and including the first one starting with ``prefix``."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if seen[-1].startswith(prefix):
            return seen
    raise AssertionError(f"no {prefix!r} within {seconds} s; got {seen}")


def test_idle_station_beats_a_stuck_writer_does_not_and_recovers(
        tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    config = write_station_config(tmp_path, sources=[])  # idle: nothing arrives unless sent
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(WATCHDOG_S * 1e6)),
           "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*EDGE_INSPECT, "run", "--config", str(config), "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=env)
    try:
        before_ready = wait_for(sock, "READY=1", 120)
        assert not any(m.startswith("WATCHDOG=1") for m in before_ready), "no heartbeat before READY"
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).status_code == 200

        idle = receive(sock, 3.0)
        assert idle.count("WATCHDOG=1") >= 4, (idle, log.read_text())

        # Another process takes the database's write lock: the service's writer waits on it (busy_timeout).
        holder = sqlite3.connect(tmp_path / "data" / "verdicts.db", isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")
        try:
            receive(sock, WATCHDOG_S)  # what was in flight when the lock was taken
            stuck = receive(sock, 3.0)
            assert "WATCHDOG=1" not in stuck, stuck
            assert any(m.startswith("STATUS=hung") and "writer" in m for m in stuck), stuck
            # the event loop itself still answers: only the heartbeat says the pipeline is stuck
            assert httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).status_code in (200, 503)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for(sock, "WATCHDOG=1", 10)

        process.send_signal(signal.SIGTERM)
        wait_for(sock, "STOPPING=1", 20)
        # uvicorn re-raises SIGTERM once shut down; systemd counts that as a clean exit
        assert process.wait(timeout=20) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)
    assert "heartbeat withheld" in log.read_text()


@dataclass
class RunnerShape:
    """The counters edge.runner.SourceRunner exposes, driven by the test."""

    source: FolderReplaySource
    running: bool = True
    judged: int = 0
    failures: int = 0


def test_progress_rules_on_a_real_store(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "verdicts.db")
    store.start()
    runner = RunnerShape(FolderReplaySource("replay", PROJECT_ROOT / "samples" / "magnetic-tile", interval_s=0.5))
    watchdog = PipelineWatchdog(store, [runner], stall_s=1.0, period_s=0.1, send=lambda m: True)
    try:
        asyncio.run(watchdog.loop_tick())
        assert watchdog.problems(time.monotonic()) == []  # queues the first writer probe
        time.sleep(0.3)  # the idle writer commits it at once
        assert watchdog.problems(time.monotonic()) == []
        runner.judged += 1  # the source delivered
        now = time.monotonic()
        assert watchdog.problems(now) == []
        time.sleep(0.3)
        # no loop tick and a running replay source standing still past stall + interval: both named;
        # the writer, idle, committed its probe and is fine
        late = watchdog.problems(now + 1.6)
        assert len(late) == 2 and late[0].startswith("HTTP event loop:") and late[1].startswith("source replay:"), late
        runner.running = False  # a source that ended (no loop) or was stopped with an alarm is no hang
        asyncio.run(watchdog.loop_tick())
        assert watchdog.problems(time.monotonic()) == []
    finally:
        store.close()
    # a stopped writer takes no probe: once the stall limit has passed without a commit it is named
    later = time.monotonic() + 5
    watchdog.problems(later)  # the probe queued before the close was committed by the closing drain
    asyncio.run(watchdog.loop_tick())
    assert [p for p in watchdog.problems(later + 1.5) if "writer" in p], "a stopped writer is reported"


def test_notify_protocol_details(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    assert notify("READY=1", {"NOTIFY_SOCKET": path}) and receive(sock, 1.0) == ["READY=1"]
    assert not notify("READY=1", {})  # not under systemd: nothing sent
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None and watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None
