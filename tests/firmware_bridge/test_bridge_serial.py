"""SerialBridge and the reliable link over `loop://` and a socat PTY pair."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import serial
from bridge_helpers import ServiceSide, pty_pair_fixture, wait_until  # noqa: F401 (fixture)

from firmware_bridge.framing import Frame, MsgType, encode_frame
from firmware_bridge.handshake import ERR_LINK_DOWN, STACK_LIGHT_CODES, Result
from firmware_bridge.link import ReliableLink
from firmware_bridge.messages import TriggerMsg, encode_trigger, encode_u16
from firmware_bridge.plc_sim import SerialPlc, run_simulation
from firmware_bridge.serial_bridge import SerialBridge

MAX_RETRIES = 3


def fast_bridge(url: str) -> SerialBridge:
    """Short timeouts so that link-down tests take a fraction of a second."""
    return SerialBridge(url, ack_timeout_s=0.05, max_retries=MAX_RETRIES, probe_interval_s=0.1)


@pytest.fixture
def serial_bridge(pty_pair: tuple[str, str]) -> Iterator[tuple[SerialBridge, ServiceSide, str]]:
    appliance_end, plc_end = pty_pair
    bridge = fast_bridge(appliance_end)
    service = ServiceSide(bridge.publish)
    bridge.start(service.on_trigger, service.on_recipe, service.on_alarm)
    yield bridge, service, plc_end
    bridge.stop()


@pytest.fixture
def plc(serial_bridge: tuple[SerialBridge, ServiceSide, str]) -> Iterator[SerialPlc]:
    peer = SerialPlc(serial_bridge[2], ack_timeout_s=0.05, max_retries=MAX_RETRIES)
    peer.start()
    yield peer
    peer.stop()


def test_reliable_link_over_loop_url_delivers_each_message_once() -> None:
    received: list[Frame] = []
    delivered: list[Frame] = []
    port = serial.serial_for_url("loop://", timeout=0.01)
    # a generous ACK timeout: a busy 2-core CI host must not look like a lost ACK (a retry)
    link = ReliableLink(lambda: port, received.append, on_delivered=delivered.append, ack_timeout_s=1.0)
    link.start()
    try:
        for value in range(20):
            link.send(MsgType.HEARTBEAT, encode_u16(value))
        link.write_raw(b"\x00garbage\xa5\x02")  # noise on the line between messages
        link.send(MsgType.RECIPE, encode_u16(7))
        wait_until(lambda: len(delivered) == 21, what="all acknowledged")
    finally:
        link.stop()
    assert [f.payload for f in received] == [encode_u16(v) for v in range(20)] + [encode_u16(7)]
    assert link.stats()["retries"] == 0 and link.stats()["resyncs"] >= 1


def test_serial_bridge_over_loop_url_answers_a_trigger() -> None:
    bridge = fast_bridge("loop://")
    service = ServiceSide(bridge.publish)
    bridge.start(service.on_trigger, service.on_recipe, service.on_alarm)
    try:
        # On loop:// the bridge hears itself: a TRIGGER written to the line comes back to it, and its
        # own RESULT comes back too and is acknowledged by itself.
        bridge.link.write_raw(encode_frame(Frame(500, MsgType.TRIGGER, encode_trigger(TriggerMsg(1, 3, "L", "SN")))))
        wait_until(lambda: bridge.stats()["acks"] == 1, what="result acknowledged")
    finally:
        bridge.stop()
    assert service.triggers[0].serial == "SN" and service.recipes == [3]
    assert bridge.stats()["results"] == 1


def test_full_round_trip_over_pty(serial_bridge: tuple[SerialBridge, ServiceSide, str], plc: SerialPlc) -> None:
    bridge, service, _ = serial_bridge
    plc.select_recipe(12)
    seq = plc.fire("SN-42", "LOT-9", 12)
    wait_until(lambda: len(plc.results) == 1, what="result")
    assert plc.results == [Result(seq, "OK" if seq % 2 == 0 else "NG")]
    trigger = service.triggers[0]
    assert (trigger.serial, trigger.lot, trigger.recipe) == ("SN-42", "LOT-9", 12)
    assert service.recipes == [12]
    wait_until(lambda: bridge.stats()["acks"] == 1, what="link ack of the result")
    assert bridge.stats()["pending_results"] == 0


def test_pipelined_triggers_over_pty(serial_bridge: tuple[SerialBridge, ServiceSide, str], plc: SerialPlc) -> None:
    bridge, service, _ = serial_bridge
    service.judge = False
    sent = [plc.fire(f"SN{i}", "L", 1) for i in range(10)]
    wait_until(lambda: len(service.triggers) == 10, what="ten triggers")
    for trigger in reversed(service.triggers):  # answered out of order
        bridge.publish(Result(trigger.seq, "OK"))
    wait_until(lambda: len(plc.results) == 10, what="ten results")
    assert sorted(r.seq for r in plc.results) == sorted(sent)


def test_garbage_truncated_and_bad_crc_frames_resync_without_loss(
    serial_bridge: tuple[SerialBridge, ServiceSide, str], plc: SerialPlc
) -> None:
    bridge, service, _ = serial_bridge
    bad_crc = bytearray(encode_frame(Frame(7, MsgType.TRIGGER, encode_trigger(TriggerMsg(9999, 1, "X", "BAD")))))
    bad_crc[-2] ^= 0x5A
    truncated = encode_frame(Frame(8, MsgType.TRIGGER, encode_trigger(TriggerMsg(9998, 1, "X", "CUT"))))[:9]
    noise = [b"\x00\x13\x37garbage\xff", truncated, bytes(bad_crc), b"\xa5\xa5\xa5", b"\xa5\x10\x00"]
    sent = []
    for index in range(30):
        plc.link.write_raw(noise[index % len(noise)])
        sent.append(plc.fire(f"SN{index}", "L", 1))
    wait_until(lambda: len(plc.results) == 30, timeout_s=15, what="thirty results")
    assert sorted(r.seq for r in plc.results) == sorted(sent)
    assert [t.serial for t in service.triggers] == [f"SN{i}" for i in range(30)]
    stats = bridge.stats()
    assert stats["crc_errors"] >= 1 and stats["resyncs"] >= 1
    assert stats["duplicate_triggers"] == 0 and stats["lost_triggers"] == 0


def test_peer_that_never_acks_raises_link_down_then_recovers(
    serial_bridge: tuple[SerialBridge, ServiceSide, str],
) -> None:
    bridge, service, plc_end = serial_bridge
    mute = serial.serial_for_url(plc_end, timeout=0.01)
    try:
        # A trigger arrives, but the peer never acknowledges anything the bridge sends back.
        mute.write(encode_frame(Frame(1, MsgType.TRIGGER, encode_trigger(TriggerMsg(1, 1, "L", "SN-MUTE")))))
        wait_until(lambda: "link_down" in service.alarm_kinds(), what="link down alarm")
        image = bridge.state.output()
        assert image.error_code == ERR_LINK_DOWN and image.stack_light == STACK_LIGHT_CODES["red"]
        assert bridge.stats()["retries"] >= MAX_RETRIES
        assert bridge.stats()["pending_results"] == 1  # kept, not dropped
    finally:
        mute.close()
    got = threading.Event()
    peer = SerialPlc(plc_end, on_result=lambda result, _at: got.set() if result.seq == 1 else None)
    peer.start(wait_status_s=0.5)
    try:
        assert got.wait(5), "the result held while the link was down never arrived"
        wait_until(lambda: "link_up" in service.alarm_kinds(), what="link up alarm")
        wait_until(lambda: bridge.state.output().error_code == 0, what="error cleared")
        wait_until(lambda: bridge.stats()["pending_results"] == 0, what="result acknowledged")
    finally:
        peer.stop()


def test_reset_error_from_the_peer(serial_bridge: tuple[SerialBridge, ServiceSide, str], plc: SerialPlc) -> None:
    bridge, service, _ = serial_bridge
    bridge.set_status(error=0x21)
    wait_until(lambda: plc.status is not None and plc.status.error_code == 0x21, what="error at the peer")
    plc.link.send(MsgType.STATUS, encode_u16(0x04))
    wait_until(lambda: plc.status is not None and plc.status.error_code == 0, what="error reset")
    assert "reset_error" in service.alarm_kinds()


def test_trigger_storm_over_pty(serial_bridge: tuple[SerialBridge, ServiceSide, str]) -> None:
    bridge, _, plc_end = serial_bridge
    report = run_simulation("serial", plc_end, parts=200, rate_hz=0, timeout_s=30)
    assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (200, 200, 0, 0)
    stats = bridge.stats()
    assert (stats["triggers"], stats["results"], stats["duplicate_triggers"]) == (200, 200, 0)


class NoisyPort:
    """A real serial port whose every third write has one byte flipped on the way out."""

    def __init__(self, url: str) -> None:
        self.port = serial.serial_for_url(url, timeout=0.01)
        self.writes = 0

    @property
    def in_waiting(self) -> int:
        return int(self.port.in_waiting)

    def read(self, size: int = 1) -> bytes:
        return bytes(self.port.read(size))

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes % 3 == 0 and len(data) > 4:
            data = data[:4] + bytes([data[4] ^ 0xFF]) + data[5:]
        self.port.write(data)

    def close(self) -> None:
        self.port.close()


def test_corrupted_frames_are_retried_and_nothing_is_lost_or_doubled(
    serial_bridge: tuple[SerialBridge, ServiceSide, str],
) -> None:
    bridge, service, plc_end = serial_bridge
    results: list[Result] = []
    lock = threading.Lock()

    def on_frame(frame: Frame) -> None:
        if frame.type == MsgType.RESULT:
            with lock:
                results.append(Result.from_code(int.from_bytes(frame.payload[:2]), int.from_bytes(frame.payload[2:])))

    peer = ReliableLink(lambda: NoisyPort(plc_end), on_frame, ack_timeout_s=0.05, max_retries=10)
    peer.start()
    try:
        for seq in range(1, 41):
            peer.send(MsgType.TRIGGER, encode_trigger(TriggerMsg(seq, 1, "L", f"SN{seq}")))
        wait_until(lambda: len(results) == 40, timeout_s=20, what="forty results over a noisy line")
    finally:
        peer.stop()
    assert sorted(r.seq for r in results) == list(range(1, 41))
    assert [t.seq for t in service.triggers] == list(range(1, 41))
    stats = bridge.stats()
    assert stats["crc_errors"] + stats["duplicates"] >= 1 and peer.stats()["retries"] >= 1
    assert stats["duplicate_triggers"] == 0 and stats["lost_triggers"] == 0


def test_missing_port_is_a_clear_error() -> None:
    bridge = SerialBridge("/dev/does-not-exist-ttyUSB9")
    with pytest.raises(RuntimeError, match="cannot open serial port"):
        bridge.start(lambda _t: None, lambda _r: None)
