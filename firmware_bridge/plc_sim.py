"""A simulated line controller: fires triggers over the real protocol, reads and acks every result.

`run_simulation("modbus", "127.0.0.1:5020", parts=100, rate_hz=25, timeout_s=30)` talks to a running
ModbusServerBridge; `run_simulation("serial", "/dev/pts/7", ...)` to a SerialBridge on the other end
of a PTY pair (see pty_pair.PtyPair).  The report counts what the PLC saw, per trigger sequence.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import serial
from pymodbus.client import ModbusTcpClient

from .framing import Frame, MsgType
from .handshake import Result, Trigger, TriggerHandler, seq_next
from .link import ReliableLink
from .messages import PayloadError, StatusMsg, TriggerMsg, decode_result, decode_status, encode_trigger, encode_u16
from .modbus_tcp import TcpServerThread, register_device
from .registers import (
    INPUT_END,
    LOT_REGS,
    MAP_END,
    OUTPUT_START,
    REG_ACK_SEQ,
    REG_LAST_TRIGGER_SEQ,
    REG_RING,
    REG_TRIGGER_SEQ,
    RING_SLOTS,
    SERIAL_REGS,
    encode_text,
)

BridgeKind = Literal["modbus", "serial"]


@dataclass
class SimulationReport:
    bridge: str
    triggers: int
    verdicts: int  # distinct triggers that got a result
    lost: int  # triggers without a result by the end
    duplicated: int  # results received again for a trigger already answered
    late: int  # results flagged late (fail-safe sent because the verdict missed its deadline)
    p50_ms: float
    p99_ms: float
    max_ms: float
    elapsed_s: float
    achieved_rate_hz: float  # triggers fired per second (the PLC's side)
    throughput_hz: float  # results received per second, first trigger to last result
    decisions: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0  # results for sequences this run never fired

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class _Tally:
    """Per-sequence bookkeeping of fired triggers and received results (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fired_at: dict[int, float] = {}
        self.latency_ms: dict[int, float] = {}
        self.duplicated = 0
        self.unexpected = 0
        self.late = 0
        self.last_result_at = 0.0
        self.decisions: Counter[str] = Counter()
        self.all_answered = threading.Event()

    def fired(self, seq: int, at: float) -> None:
        with self.lock:
            self.fired_at[seq] = at
            self.all_answered.clear()

    def received(self, result: Result, at: float) -> None:
        with self.lock:
            fired = self.fired_at.get(result.seq)
            if fired is None:
                self.unexpected += 1
                return
            if result.seq in self.latency_ms:
                self.duplicated += 1
                return
            self.latency_ms[result.seq] = (at - fired) * 1000
            self.last_result_at = max(self.last_result_at, at)
            self.decisions[result.decision] += 1
            self.late += result.late
            if len(self.latency_ms) == len(self.fired_at):
                self.all_answered.set()

    def report(self, bridge: str, elapsed_s: float, first_fire: float, last_fire: float) -> SimulationReport:
        with self.lock:
            latencies = list(self.latency_ms.values())
            fired = len(self.fired_at)
            span = last_fire - first_fire
            return SimulationReport(
                bridge=bridge,
                triggers=fired,
                verdicts=len(latencies),
                lost=fired - len(latencies),
                duplicated=self.duplicated,
                late=self.late,
                p50_ms=round(percentile(latencies, 50), 3),
                p99_ms=round(percentile(latencies, 99), 3),
                max_ms=round(max(latencies, default=0.0), 3),
                elapsed_s=round(elapsed_s, 3),
                achieved_rate_hz=round((fired - 1) / span, 1) if fired > 1 and span > 0 else 0.0,
                throughput_hz=round(len(latencies) / (self.last_result_at - first_fire), 1) if latencies else 0.0,
                decisions=dict(self.decisions),
                unexpected=self.unexpected,
            )


class ModbusPlc:
    """The PLC side against a ModbusServerBridge: one scan = maybe fire, read outputs, ack."""

    def __init__(self, host: str, port: int, unit_id: int = 1, timeout_s: float = 2.0) -> None:
        self.unit_id = unit_id
        self.client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=1)
        self.ack_seq = 0
        self.trigger_seq = 0

    def connect(self) -> None:
        if not self.client.connect():
            raise ConnectionError(f"cannot connect to the appliance's Modbus server at {self.client.comm_params.host}")
        inputs = self._read(0, INPUT_END)
        self.ack_seq = inputs[REG_ACK_SEQ]
        self.trigger_seq = self.read_outputs()[REG_LAST_TRIGGER_SEQ - OUTPUT_START]

    def close(self) -> None:
        self.client.close()

    def _read(self, address: int, count: int) -> list[int]:
        response = self.client.read_holding_registers(address, count=count, device_id=self.unit_id)
        if response.isError():
            raise RuntimeError(f"read of registers {address}..{address + count - 1} failed: {response}")
        return list(response.registers)

    def read_outputs(self) -> list[int]:
        return self._read(OUTPUT_START, MAP_END - OUTPUT_START)

    def ring(self, outputs: list[int]) -> list[Result]:
        base = REG_RING - OUTPUT_START
        entries = []
        for slot in range(RING_SLOTS):
            seq, code = outputs[base + 2 * slot], outputs[base + 2 * slot + 1]
            if code:
                entries.append(Result.from_code(seq, code))
        return entries

    def fire(self, serial_number: str, lot: str, recipe: int) -> int:
        """Latch recipe, lot, serial and the next trigger sequence in one write (FC16)."""
        seq = seq_next(self.trigger_seq)
        block = [seq, self.ack_seq, recipe, *encode_text(lot, LOT_REGS), *encode_text(serial_number, SERIAL_REGS)]
        response = self.client.write_registers(REG_TRIGGER_SEQ, block, device_id=self.unit_id)
        if response.isError():
            raise RuntimeError(f"trigger write refused: {response}")
        self.trigger_seq = seq
        return seq

    def ack(self, seq: int) -> None:
        response = self.client.write_register(REG_ACK_SEQ, seq, device_id=self.unit_id)
        if response.isError():
            raise RuntimeError(f"ack of {seq} refused: {response}")
        self.ack_seq = seq


class SerialPlc:
    """The microcontroller side against a SerialBridge: sends TRIGGERs, receives RESULTs."""

    def __init__(
        self,
        port_url: str,
        baudrate: int = 115200,
        on_result: Callable[[Result, float], None] | None = None,
        ack_timeout_s: float = 0.05,
        max_retries: int = 5,
    ) -> None:
        self.port_url, self.baudrate = port_url, baudrate
        self.on_result = on_result
        self.results: list[Result] = []
        self.status: StatusMsg | None = None
        self._status_seen = threading.Event()
        self.link = ReliableLink(
            lambda: serial.serial_for_url(port_url, baudrate=baudrate, timeout=0.01, write_timeout=1.0),
            self._on_frame,
            ack_timeout_s=ack_timeout_s,
            max_retries=max_retries,
            name="plc-sim",
        )
        self.trigger_seq = 0

    def start(self, wait_status_s: float = 2.0) -> None:
        """Open the port and ask for the appliance's status (a HEARTBEAT does): trigger numbering continues from it."""
        self.link.start()
        self.link.send(MsgType.HEARTBEAT, encode_u16(0))
        if self._status_seen.wait(wait_status_s) and self.status is not None:
            self.trigger_seq = self.status.last_trigger_seq

    def stop(self) -> None:
        self.link.stop()

    def fire(self, serial_number: str, lot: str, recipe: int, before_send: Callable[[int], None] | None = None) -> int:
        """Send the next trigger; `before_send(seq)` runs first (so a fast result never beats the bookkeeping)."""
        seq = seq_next(self.trigger_seq)
        if before_send is not None:
            before_send(seq)
        self.link.send(MsgType.TRIGGER, encode_trigger(TriggerMsg(seq, recipe, lot, serial_number)))
        self.trigger_seq = seq
        return seq

    def select_recipe(self, recipe: int) -> None:
        self.link.send(MsgType.RECIPE, encode_u16(recipe))

    def _on_frame(self, frame: Frame) -> None:
        now = time.monotonic()
        try:
            if frame.type == MsgType.RESULT:
                result = decode_result(frame.payload)
                self.results.append(result)
                if self.on_result is not None:
                    self.on_result(result, now)
            elif frame.type == MsgType.STATUS:
                self.status = decode_status(frame.payload)
                self._status_seen.set()
        except PayloadError:
            pass  # counted by nobody: the simulator only reports what it can read


class PlcRegisterServer:
    """A PLC's own Modbus server holding the register map, for the appliance-as-client mode.

    Plain memory, no checks: the simulated PLC program writes 0..27 through a client of its own,
    and ModbusClientBridge polls 0..27 and writes 32..63.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5021, unit_id: int = 1) -> None:
        self.host, self.port, self.unit_id = host, port, unit_id
        self._server = TcpServerThread(host, port, [register_device(unit_id, MAP_END)], "plc-server")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()


def _host_port(connection: str) -> tuple[str, int, int]:
    """'host:port' or 'host:port/unit'."""
    address, _, unit = connection.partition("/")
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port), int(unit or 1)


def run_simulation(
    bridge_kind: BridgeKind,
    connection: str,
    parts: int,
    rate_hz: float,
    timeout_s: float,
    *,
    lot: str = "LOT-SIM",
    recipe: int = 1,
    scan_interval_s: float = 0.002,
) -> SimulationReport:
    """Fire `parts` triggers at `rate_hz` (0 or inf: as fast as possible), read every result back,
    and wait up to `timeout_s` in all. `connection` is 'host:port[/unit]' for modbus, a port URL for serial."""
    if bridge_kind == "modbus":
        host, port, unit = _host_port(connection)
        return _run_modbus(ModbusPlc(host, port, unit), parts, rate_hz, timeout_s, lot, recipe, scan_interval_s)
    if bridge_kind == "serial":
        return _run_serial(connection, parts, rate_hz, timeout_s, lot, recipe)
    raise ValueError(f"bridge_kind must be 'modbus' or 'serial', got {bridge_kind!r}")


def _period(rate_hz: float) -> float:
    return 0.0 if rate_hz <= 0 or math.isinf(rate_hz) else 1.0 / rate_hz


def _run_modbus(
    plc: ModbusPlc, parts: int, rate_hz: float, timeout_s: float, lot: str, recipe: int, scan_s: float
) -> SimulationReport:
    tally = _Tally()
    plc.connect()
    period = _period(rate_hz)
    try:
        start = time.monotonic()
        first_fire = last_fire = start
        fired = 0
        while time.monotonic() - start < timeout_s:
            now = time.monotonic()
            if fired < parts and now >= start + fired * period:
                last_fire = time.monotonic()
                seq = plc.fire(f"SN{fired + 1:06d}", lot, recipe)
                tally.fired(seq, last_fire)
                first_fire = last_fire if fired == 0 else first_fire
                fired += 1
            outputs = plc.read_outputs()
            seen_at = time.monotonic()
            entries = plc.ring(outputs)
            for result in entries:
                tally.received(result, seen_at)
            if entries:
                plc.ack(entries[-1].seq)
            if fired == parts and tally.all_answered.is_set():
                break
            if not entries and (fired == parts or time.monotonic() < start + fired * period):
                time.sleep(scan_s)
        return tally.report("modbus", time.monotonic() - start, first_fire, last_fire)
    finally:
        plc.close()


def _run_serial(port_url: str, parts: int, rate_hz: float, timeout_s: float, lot: str, recipe: int) -> SimulationReport:
    tally = _Tally()
    plc = SerialPlc(port_url, on_result=tally.received)
    plc.start()
    period = _period(rate_hz)
    try:
        start = time.monotonic()
        first_fire = last_fire = start
        for index in range(parts):
            delay = start + index * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            last_fire = time.monotonic()
            first_fire = last_fire if index == 0 else first_fire
            plc.fire(f"SN{index + 1:06d}", lot, recipe, before_send=lambda seq: tally.fired(seq, time.monotonic()))
        tally.all_answered.wait(max(0.0, timeout_s - (time.monotonic() - start)))
        time.sleep(0.05)  # let a duplicate, if any, arrive and be counted
        return tally.report("serial", time.monotonic() - start, first_fire, last_fire)
    finally:
        plc.stop()


def parity_judge(publish: Callable[[Result], None]) -> TriggerHandler:
    """A trivial judge for tests and benchmarks: even sequence OK, odd NG, at once."""

    def judge(trigger: Trigger) -> None:
        publish(Result(trigger.seq, "OK" if trigger.seq % 2 == 0 else "NG"))

    return judge
