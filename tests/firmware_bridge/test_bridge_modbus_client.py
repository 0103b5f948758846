"""ModbusClientBridge polling a PLC that hosts the register map (a real pymodbus server on loopback)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from bridge_helpers import ServiceSide, free_port, wait_until
from pymodbus.client import ModbusTcpClient

from firmware_bridge.handshake import ST_OK, ST_RESULT_VALID
from firmware_bridge.modbus_client import ModbusClientBridge
from firmware_bridge.plc_sim import PlcRegisterServer
from firmware_bridge.registers import (
    LOT_REGS,
    OUTPUT_START,
    REG_ACK_SEQ,
    REG_HEARTBEAT,
    REG_LAST_TRIGGER_SEQ,
    REG_PENDING,
    REG_RING,
    REG_STATUS,
    REG_TRIGGER_SEQ,
    SERIAL_REGS,
    encode_text,
)


@pytest.fixture
def plc_program() -> Iterator[tuple[PlcRegisterServer, ModbusTcpClient]]:
    server = PlcRegisterServer("127.0.0.1", free_port(), unit_id=1)
    server.start()
    program = ModbusTcpClient("127.0.0.1", port=server.port, timeout=2)
    assert program.connect()
    yield server, program
    program.close()
    server.stop()


def outputs(program: ModbusTcpClient) -> list[int]:
    return list(program.read_holding_registers(OUTPUT_START, count=32, device_id=1).registers)


def echoed(program: ModbusTcpClient, seq: int) -> bool:
    return outputs(program)[REG_LAST_TRIGGER_SEQ - OUTPUT_START] == seq


def test_client_mode_round_trip(plc_program: tuple[PlcRegisterServer, ModbusTcpClient]) -> None:
    server, program = plc_program
    bridge = ModbusClientBridge("127.0.0.1", server.port, unit_id=1, poll_interval_s=0.005)
    service = ServiceSide(bridge.publish)
    bridge.start(service.on_trigger, service.on_recipe, service.on_alarm)
    try:
        wait_until(lambda: outputs(program)[REG_HEARTBEAT - OUTPUT_START] > 0, what="first poll")
        for seq in (1, 2, 3):
            block = [seq, 0, 4, *encode_text("LOT-C", LOT_REGS), *encode_text(f"SN{seq}", SERIAL_REGS)]
            program.write_registers(REG_TRIGGER_SEQ, block, device_id=1)
            wait_until(functools.partial(echoed, program, seq), what="trigger echo")
        wait_until(lambda: outputs(program)[REG_PENDING - OUTPUT_START] == 3, what="three results")
        registers = outputs(program)
        assert registers[REG_STATUS - OUTPUT_START] & ST_RESULT_VALID
        assert not registers[REG_STATUS - OUTPUT_START] & ST_OK  # seq 1 is odd: NG
        ring = registers[REG_RING - OUTPUT_START : REG_RING - OUTPUT_START + 6]
        assert ring == [1, 2, 2, 1, 3, 2]
        program.write_register(REG_ACK_SEQ, 3, device_id=1)
        wait_until(lambda: outputs(program)[REG_PENDING - OUTPUT_START] == 0, what="acknowledged")
        assert [t.serial for t in service.triggers] == ["SN1", "SN2", "SN3"]
        assert service.recipes == [4]
        assert bridge.stats()["lost_triggers"] == 0
    finally:
        bridge.stop()


def test_client_mode_survives_the_plc_going_away() -> None:
    port = free_port()
    bridge = ModbusClientBridge("127.0.0.1", port, unit_id=1, poll_interval_s=0.01)
    service = ServiceSide(bridge.publish)
    bridge.start(service.on_trigger, service.on_recipe, service.on_alarm)
    server = PlcRegisterServer("127.0.0.1", port, unit_id=1)
    try:
        wait_until(lambda: "link_down" in service.alarm_kinds(), what="link down alarm")
        assert bridge.state.output().stack_light == 3  # red
        server.start()
        wait_until(lambda: "link_up" in service.alarm_kinds(), timeout_s=10, what="link up alarm")
        assert bridge.state.output().error_code == 0
    finally:
        bridge.stop()
        server.stop()
