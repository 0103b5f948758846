"""LineBridge over a serial line to a microcontroller (pyserial URL: /dev/ttyUSB0, a PTY, loop://)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import serial

from .core import BridgeCore
from .framing import MAX_PAYLOAD, OVERHEAD, Frame, MsgType
from .handshake import ERR_LINK_DOWN, AlarmHandler, RecipeHandler, Result, TriggerHandler
from .link import ReliableLink
from .messages import PayloadError, decode_result, decode_trigger, decode_u16, encode_result, encode_status, encode_u16
from .registers import CONTROL_RESET_ERROR

log = logging.getLogger(__name__)


class SerialBridge(BridgeCore):
    """Triggers, recipes and control bits come in as frames; results, status and heartbeats go out.

    A RESULT counts as acknowledged by the PLC when its frame is acknowledged on the link.  When the
    peer stops acknowledging, the link goes down after the retries (alarm `link_down`, error
    0x101, red stack light); queued results stay queued and go out in order when it answers again.
    """

    def __init__(
        self,
        port_url: str,
        baudrate: int = 115200,
        *,
        heartbeat_s: float = 1.0,
        ack_timeout_s: float | None = None,
        max_retries: int = 5,
        probe_interval_s: float = 0.5,
    ) -> None:
        super().__init__("serial-bridge")
        self.port_url, self.baudrate, self.heartbeat_s = port_url, baudrate, heartbeat_s
        if ack_timeout_s is None:  # 50 ms plus the wire time of a longest frame out and back
            ack_timeout_s = 0.05 + 2 * (MAX_PAYLOAD + OVERHEAD) * 10 / baudrate
        self.link = ReliableLink(
            self._open_port,
            self._on_frame,
            on_delivered=self._on_delivered,
            on_link_change=self._on_link_change,
            ack_timeout_s=ack_timeout_s,
            max_retries=max_retries,
            probe_interval_s=probe_interval_s,
            name="serial-bridge",
        )
        self._stopping = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None

    def _open_port(self) -> Any:
        return serial.serial_for_url(self.port_url, baudrate=self.baudrate, timeout=0.01, write_timeout=1.0)

    def start(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None) -> None:
        self._start_core(on_trigger, on_recipe, on_alarm)
        try:
            self.link.start()
        except Exception as exc:
            self._stop_core()
            raise RuntimeError(f"cannot open serial port {self.port_url!r}: {exc}") from exc
        self._stopping.clear()
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="serial-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        self._status_changed()

    def stop(self) -> None:
        self._stopping.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(2)
            self._heartbeat_thread = None
        self.link.stop()
        self._stop_core()

    def stats(self) -> dict[str, int]:
        merged = super().stats()
        merged.update(self.link.stats())
        return merged

    # ----- hooks ------------------------------------------------------------------------------

    def _result_published(self, result: Result) -> None:
        self.link.send(MsgType.RESULT, encode_result(result))

    def _status_changed(self) -> None:
        self.link.send(MsgType.STATUS, encode_status(self.state.output()), coalesce=True)

    def _heartbeat_loop(self) -> None:
        while not self._stopping.wait(self.heartbeat_s):
            counter = self.state.beat()
            if not self.link.queued(MsgType.HEARTBEAT):  # never pile heartbeats up behind a dead link
                self.link.send(MsgType.HEARTBEAT, encode_u16(counter))

    def _on_link_change(self, up: bool) -> None:
        self.state.set_link_down(not up)
        if up:
            self.alarm("link_up", f"serial peer on {self.port_url} acknowledges again")
        else:
            self.alarm("link_down", f"serial peer on {self.port_url} stopped acknowledging (error {ERR_LINK_DOWN:#x})")
        self._status_changed()

    def _on_delivered(self, frame: Frame) -> None:
        if frame.type == MsgType.RESULT:
            self.state.ack(decode_result(frame.payload).seq)

    def _on_frame(self, frame: Frame) -> None:
        try:
            if frame.type == MsgType.TRIGGER:
                msg = decode_trigger(frame.payload)
                if self.state.set_recipe(msg.recipe):
                    self.deliver_recipe(msg.recipe)
                self.accept_trigger(msg.seq, msg.serial, msg.lot, msg.recipe)
            elif frame.type == MsgType.RECIPE:
                recipe = decode_u16(frame.payload)
                if self.state.set_recipe(recipe):
                    self.deliver_recipe(recipe)
            elif frame.type == MsgType.STATUS:
                if decode_u16(frame.payload) & CONTROL_RESET_ERROR:
                    self.state.reset_error()
                    self.alarm("reset_error", "the PLC asked to reset the error state")
                    self._status_changed()
            elif frame.type == MsgType.HEARTBEAT:
                self.count("peer_heartbeats")
                self._status_changed()  # a peer's heartbeat doubles as a status request
            else:
                self.count("unexpected_frames")
        except PayloadError as exc:
            self.count("bad_payloads")
            self.alarm("bad_payload", f"serial peer sent a malformed {frame.type:#04x} frame: {exc}")
