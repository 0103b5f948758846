"""ModbusServerBridge against a real pymodbus client on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bridge_helpers import ServiceSide, modbus_bridge_fixture, wait_until  # noqa: F401 (fixture)
from pymodbus.client import ModbusTcpClient

from firmware_bridge.handshake import ST_ACK_ECHO, ST_BUSY, ST_NG, ST_OK, ST_RESULT_VALID, Result
from firmware_bridge.modbus_server import ModbusServerBridge
from firmware_bridge.plc_sim import ModbusPlc, run_simulation
from firmware_bridge.registers import (
    CONTROL_ACK,
    CONTROL_TRIGGER,
    LOT_REGS,
    OUTPUT_START,
    REG_ACK_SEQ,
    REG_CONTROL,
    REG_HEARTBEAT,
    REG_LOT,
    REG_PENDING,
    REG_RECIPE,
    REG_RING,
    REG_STATUS,
    REG_TRIGGER_SEQ,
    SERIAL_REGS,
    encode_text,
)

Bridge = tuple[ModbusServerBridge, ServiceSide]


@pytest.fixture
def client(modbus_bridge: Bridge) -> Iterator[ModbusTcpClient]:
    bridge, _ = modbus_bridge
    modbus = ModbusTcpClient("127.0.0.1", port=bridge.port, timeout=2)
    assert modbus.connect()
    yield modbus
    modbus.close()


def outputs(client: ModbusTcpClient) -> list[int]:
    response = client.read_holding_registers(OUTPUT_START, count=32, device_id=1)
    assert not response.isError(), response
    return list(response.registers)


def out(registers: list[int], address: int) -> int:
    return registers[address - OUTPUT_START]


def fire(client: ModbusTcpClient, seq: int, serial: str, lot: str = "LOT-A", recipe: int = 5, ack: int = 0) -> None:
    block = [seq, ack, recipe, *encode_text(lot, LOT_REGS), *encode_text(serial, SERIAL_REGS)]
    assert not client.write_registers(REG_TRIGGER_SEQ, block, device_id=1).isError()


def test_full_handshake_round_trip(modbus_bridge: Bridge, client: ModbusTcpClient) -> None:
    bridge, service = modbus_bridge
    service.judge = False  # hold the verdict to see Busy first
    fire(client, 1, "SN-0001", lot="LOT-2026-11", recipe=7)
    wait_until(lambda: len(service.triggers) == 1, what="trigger delivered")
    trigger = service.triggers[0]
    assert (trigger.seq, trigger.serial, trigger.lot, trigger.recipe) == (1, "SN-0001", "LOT-2026-11", 7)
    assert service.recipes == [7]
    registers = outputs(client)
    assert out(registers, REG_STATUS) & ST_BUSY and not out(registers, REG_STATUS) & ST_RESULT_VALID

    bridge.publish(Result(1, "OK"))
    registers = outputs(client)
    status = out(registers, REG_STATUS)
    assert status & ST_RESULT_VALID and status & ST_OK and not status & (ST_NG | ST_BUSY)
    assert registers[REG_RING - OUTPUT_START : REG_RING - OUTPUT_START + 2] == [1, 1]

    assert not client.write_register(REG_ACK_SEQ, 1, device_id=1).isError()
    registers = outputs(client)
    assert not out(registers, REG_STATUS) & ST_RESULT_VALID and out(registers, REG_PENDING) == 0
    stats = bridge.stats()
    assert (stats["triggers"], stats["results"], stats["acks"]) == (1, 1, 1)
    assert {"retries", "crc_errors", "resyncs", "rejected_writes", "lost_triggers", "duplicate_triggers"} <= set(stats)


def test_heartbeat_moves(modbus_bridge: Bridge, client: ModbusTcpClient) -> None:
    first = out(outputs(client), REG_HEARTBEAT)
    wait_until(lambda: out(outputs(client), REG_HEARTBEAT) != first, timeout_s=2, what="heartbeat")


def test_pipelined_triggers_in_order_without_loss(modbus_bridge: Bridge, client: ModbusTcpClient) -> None:
    bridge, service = modbus_bridge
    for seq in range(1, 6):
        fire(client, seq, f"SN{seq}")
    wait_until(lambda: bridge.stats()["pending_results"] == 5, what="five results")
    ring = outputs(client)[REG_RING - OUTPUT_START :]
    assert ring[:10] == [1, 2, 2, 1, 3, 2, 4, 1, 5, 2]  # (seq, code) oldest first: odd NG, even OK
    assert not client.write_register(REG_ACK_SEQ, 3, device_id=1).isError()
    registers = outputs(client)
    assert out(registers, REG_PENDING) == 2 and out(registers, REG_RING) == 4
    assert [t.serial for t in service.triggers] == [f"SN{i}" for i in range(1, 6)]


def test_rewriting_the_same_counter_is_not_a_trigger_and_a_gap_is_lost(
    modbus_bridge: Bridge, client: ModbusTcpClient
) -> None:
    bridge, service = modbus_bridge
    fire(client, 1, "SN1")
    fire(client, 1, "SN1")  # a PLC that rewrites its whole block every scan
    fire(client, 4, "SN4")
    wait_until(lambda: bridge.stats()["triggers"] == 2, what="two triggers")
    wait_until(lambda: "lost_trigger" in service.alarm_kinds(), what="lost trigger alarm")
    assert bridge.stats()["lost_triggers"] == 2


def test_counter_wraps_through_zero(modbus_bridge: Bridge, client: ModbusTcpClient) -> None:
    bridge, _ = modbus_bridge
    for seq in (65534, 65535, 0, 1):
        fire(client, seq, f"SN{seq}")
    wait_until(lambda: bridge.stats()["results"] == 4, what="four results")
    assert bridge.stats()["lost_triggers"] == 0 and bridge.stats()["duplicate_triggers"] == 0


def test_port_in_use_is_a_clear_error(modbus_bridge: Bridge) -> None:
    bridge, _ = modbus_bridge
    second = ModbusServerBridge("127.0.0.1", bridge.port, unit_id=1)
    with pytest.raises(RuntimeError, match="could not listen"):
        second.start(lambda _t: None, lambda _r: None)


def test_level_only_plc(modbus_bridge: Bridge, client: ModbusTcpClient) -> None:
    _, service = modbus_bridge
    assert not client.write_register(REG_CONTROL, CONTROL_TRIGGER, device_id=1).isError()
    wait_until(lambda: out(outputs(client), REG_STATUS) & ST_RESULT_VALID != 0, what="ResultValid")
    assert out(outputs(client), REG_STATUS) & ST_NG  # seq 1: odd
    assert not client.write_register(REG_CONTROL, CONTROL_TRIGGER | CONTROL_ACK, device_id=1).isError()
    status = out(outputs(client), REG_STATUS)
    assert status & ST_ACK_ECHO and not status & ST_RESULT_VALID
    assert not client.write_register(REG_CONTROL, 0, device_id=1).isError()
    assert len(service.triggers) == 1


@pytest.mark.parametrize(
    ("request_kind", "expected_code", "counter"),
    [
        ("write_read_only", 2, "rejected_writes"),
        ("write_reserved", 2, "rejected_writes"),
        ("write_far", 2, "rejected_writes"),
        ("recipe_too_high", 3, "rejected_writes"),
        ("control_bits", 3, "rejected_writes"),
        ("lot_not_ascii", 3, "rejected_writes"),
        ("ack_never_published", 3, "rejected_writes"),
        ("read_past_map", 2, "rejected_reads"),
        ("write_coil", 1, "rejected_functions"),
        ("wrong_unit", 0x0B, "wrong_unit"),
    ],
)
def test_bad_requests_get_exceptions_are_counted_and_change_nothing(
    modbus_bridge: Bridge, client: ModbusTcpClient, request_kind: str, expected_code: int, counter: str
) -> None:
    bridge, service = modbus_bridge
    requests = {
        "write_read_only": lambda: client.write_register(REG_STATUS, 1, device_id=1),
        "write_reserved": lambda: client.write_register(29, 1, device_id=1),
        "write_far": lambda: client.write_registers(1000, [1, 2], device_id=1),
        "recipe_too_high": lambda: client.write_register(REG_RECIPE, 5000, device_id=1),
        "control_bits": lambda: client.write_register(REG_CONTROL, 0x80, device_id=1),
        "lot_not_ascii": lambda: client.write_registers(REG_LOT, [0x41FF], device_id=1),
        "ack_never_published": lambda: client.write_register(REG_ACK_SEQ, 77, device_id=1),
        "read_past_map": lambda: client.read_holding_registers(60, count=10, device_id=1),
        "write_coil": lambda: client.write_coil(0, True, device_id=1),
        "wrong_unit": lambda: client.read_holding_registers(0, count=2, device_id=9),
    }
    before = outputs(client)
    response = requests[request_kind]()
    assert response.isError()
    assert response.exception_code == expected_code
    assert bridge.stats()[counter] == 1
    assert outputs(client)[: REG_HEARTBEAT - OUTPUT_START] == before[: REG_HEARTBEAT - OUTPUT_START]
    # The bridge keeps working: a normal round trip right after.
    fire(client, 1, "SN-after")
    wait_until(lambda: out(outputs(client), REG_PENDING) == 1, what="result after a bad request")
    assert service.triggers[-1].serial == "SN-after"


def test_trigger_storm_gets_exactly_one_result_each(modbus_bridge: Bridge) -> None:
    bridge, _ = modbus_bridge
    report = run_simulation("modbus", f"127.0.0.1:{bridge.port}", parts=200, rate_hz=0, timeout_s=30)
    assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (200, 200, 0, 0)
    assert report.decisions == {"OK": 100, "NG": 100}
    assert {"triggers", "verdicts", "lost", "duplicated", "late", "p50_ms", "p99_ms"} <= set(report.to_dict())
    stats = bridge.stats()
    assert (stats["triggers"], stats["results"], stats["duplicate_triggers"], stats["pending_results"]) == (
        200,
        200,
        0,
        0,
    )


def test_simulation_continues_the_counter_across_runs(modbus_bridge: Bridge) -> None:
    bridge, _ = modbus_bridge
    connection = f"127.0.0.1:{bridge.port}/1"
    for _ in range(2):
        report = run_simulation("modbus", connection, parts=20, rate_hz=200, timeout_s=10)
        assert (report.verdicts, report.lost, report.duplicated) == (20, 0, 0)
    assert bridge.stats()["triggers"] == 40 and bridge.stats()["lost_triggers"] == 0


def test_results_survive_a_plc_reconnect(modbus_bridge: Bridge) -> None:
    bridge, _ = modbus_bridge
    plc = ModbusPlc("127.0.0.1", bridge.port)
    plc.connect()
    seq = plc.fire("SN-R", "LOT", 1)
    plc.close()  # the PLC drops the connection before reading its result
    wait_until(lambda: bridge.stats()["pending_results"] == 1, what="result pending")
    plc = ModbusPlc("127.0.0.1", bridge.port)
    plc.connect()
    assert [r.seq for r in plc.ring(plc.read_outputs())] == [seq]
    plc.ack(seq)
    plc.close()
    assert bridge.stats()["pending_results"] == 0
