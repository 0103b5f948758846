"""Reliable message link over a serial port: acknowledgement, retry, duplicate suppression.

Stop-and-wait per direction: one unacknowledged frame at a time, so messages arrive in order and
exactly once.  Every non-ACK frame is answered with an ACK carrying its SEQ; the sender
retransmits after `ack_timeout_s`, and after `max_retries` declares the link down (callback) and
keeps probing every `probe_interval_s` with the same frame, so nothing queued is lost; the first
ACK brings the link back up.  A receiver drops (and re-acknowledges) a frame whose SEQ equals the
last one it delivered: that is a retransmission whose ACK was lost.  Each side starts its
sequence at a random value, so a peer that restarts is not mistaken for a retransmission.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .framing import Frame, FrameDecoder, MsgType, encode_frame

log = logging.getLogger(__name__)

PortFactory = Callable[[], Any]  # returns an open pyserial-like port (read/write/in_waiting/close)


@dataclass
class _Outgoing:
    msg_type: int
    payload: bytes
    seq: int = -1
    tries: int = 0
    sent_at: float = 0.0


class ReliableLink:
    """Frames and delivers messages over a pyserial port (a real device, a PTY, `loop://`)."""

    def __init__(
        self,
        open_port: PortFactory,
        on_message: Callable[[Frame], None],
        *,
        on_delivered: Callable[[Frame], None] | None = None,
        on_link_change: Callable[[bool], None] | None = None,
        ack_timeout_s: float = 0.05,
        max_retries: int = 5,
        probe_interval_s: float = 0.5,
        name: str = "serial-link",
    ) -> None:
        self._open_port = open_port
        self._on_message = on_message
        self._on_delivered = on_delivered
        self._on_link_change = on_link_change
        self.ack_timeout_s, self.max_retries, self.probe_interval_s = ack_timeout_s, max_retries, probe_interval_s
        self.name = name
        self._port: Any = None
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self._next_seq = random.randrange(1 << 16)
        self._last_rx_seq: int | None = None
        self._link_up = True
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.decoder = FrameDecoder()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "frames_sent",
                "frames_received",
                "acks_received",
                "retries",
                "duplicates",
                "stale_acks",
                "io_errors",
                "link_down",
            ),
            0,
        )

    # ----- public -----------------------------------------------------------------------------

    def start(self) -> None:
        self._port = self._open_port()
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._rx_loop, name=f"{self.name}-rx", daemon=True),
            threading.Thread(target=self._tx_loop, name=f"{self.name}-tx", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(2)
        self._threads = []
        port, self._port = self._port, None
        if port is not None:
            port.close()

    def send(self, msg_type: MsgType, payload: bytes, *, coalesce: bool = False) -> None:
        """Queue a message for reliable delivery; never blocks. With `coalesce`, a queued message of
        the same type that has not gone out yet is replaced (status: only the latest matters)."""
        with self._cond:
            if coalesce:
                for item in self._queue:
                    if item.msg_type == msg_type:
                        item.payload = payload
                        return
            self._queue.append(_Outgoing(int(msg_type), payload))
            self._cond.notify_all()

    def queued(self, msg_type: MsgType | None = None) -> int:
        """Messages not yet acknowledged (of one type, or all)."""
        with self._cond:
            items = [*self._queue, *([self._inflight] if self._inflight else [])]
            return sum(1 for item in items if msg_type is None or item.msg_type == msg_type)

    def write_raw(self, data: bytes) -> None:
        """Write bytes as they are (fault injection in tests and the simulator)."""
        self._write(data)

    @property
    def link_up(self) -> bool:
        return self._link_up

    def stats(self) -> dict[str, int]:
        with self._cond:
            merged = dict(self.counters)
        decoder = self.decoder
        merged.update(
            crc_errors=decoder.crc_errors,
            resyncs=decoder.resyncs,
            truncated_frames=decoder.truncated,
            bad_lengths=decoder.bad_lengths,
        )
        return merged

    # ----- internals --------------------------------------------------------------------------

    def _write(self, data: bytes) -> bool:
        with self._write_lock:
            port = self._port
            if port is None:
                return False
            try:
                port.write(data)
                return True
            except Exception as exc:  # pyserial raises SerialException (an OSError on POSIX) and others
                self._count("io_errors")
                log.warning("%s: write failed: %s", self.name, exc)
                return False

    def _count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self.counters[key] += n

    def _set_link(self, up: bool) -> None:
        with self._cond:
            if up == self._link_up:
                return
            self._link_up = up
            if not up:
                self.counters["link_down"] += 1
        log.warning("%s: link %s", self.name, "up" if up else "DOWN (peer does not acknowledge)")
        if self._on_link_change is not None:
            self._on_link_change(up)

    def _tx_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                frame_bytes: bytes | None = None
                item = self._inflight
                if item is None and self._queue:
                    item = self._inflight = self._queue.popleft()
                    item.seq = self._next_seq
                    self._next_seq = (self._next_seq + 1) & 0xFFFF
                if item is not None:
                    interval = self.ack_timeout_s if self._link_up else self.probe_interval_s
                    due = item.sent_at + interval if item.tries else now
                    if now >= due:
                        if item.tries:
                            self.counters["retries"] += 1
                        item.tries += 1
                        item.sent_at = now
                        frame_bytes = encode_frame(Frame(item.seq, item.msg_type, item.payload))
                        self.counters["frames_sent"] += 1
                        due = now + interval
                    give_up = self._link_up and item.tries > self.max_retries
                    wait_s: float | None = max(0.0, due - now)
                else:
                    give_up, wait_s = False, None
                if frame_bytes is None and not give_up:
                    self._cond.wait(wait_s)
                    continue
            if give_up:
                self._set_link(False)
            if frame_bytes is not None:
                self._write(frame_bytes)

    def _rx_loop(self) -> None:
        while not self._stopping:
            port = self._port
            if port is None:
                self._reopen()
                continue
            try:
                data = port.read(max(1, port.in_waiting))
            except Exception as exc:  # device unplugged, port closed under us, ...
                if self._stopping:
                    return
                self._count("io_errors")
                log.warning("%s: read failed, reopening the port: %s", self.name, exc)
                with self._write_lock:
                    self._port = None
                try:
                    port.close()
                except Exception:
                    log.debug("%s: close after a read error failed", self.name, exc_info=True)
                continue
            now = time.monotonic()
            if not data:
                self.decoder.expire(now)
                continue
            for frame in self.decoder.feed(data, now):
                self._handle(frame)

    def _reopen(self) -> None:
        """Try to open the port again (every 0.5 s); queued messages wait, retried once it is back."""
        time.sleep(0.5)
        if self._stopping:
            return
        try:
            port = self._open_port()
        except Exception as exc:
            log.debug("%s: reopen failed: %s", self.name, exc)
            return
        with self._write_lock:
            self._port = port
        log.warning("%s: port reopened", self.name)

    def _handle(self, frame: Frame) -> None:
        if frame.type == MsgType.ACK:
            delivered: _Outgoing | None = None
            with self._cond:
                item = self._inflight
                if item is not None and item.seq == frame.seq:
                    delivered, self._inflight = item, None
                    self.counters["acks_received"] += 1
                    self._cond.notify_all()
                else:
                    self.counters["stale_acks"] += 1
            if delivered is not None:
                self._set_link(True)
                if self._on_delivered is not None:
                    self._on_delivered(Frame(delivered.seq, delivered.msg_type, delivered.payload))
            return
        self._write(encode_frame(Frame(frame.seq, MsgType.ACK)))
        with self._cond:
            self.counters["frames_received"] += 1
            duplicate = frame.seq == self._last_rx_seq
            if duplicate:
                self.counters["duplicates"] += 1
            self._last_rx_seq = frame.seq
        if not duplicate:
            self._on_message(frame)
