"""The link between the appliance and the line controller (PLC / microcontroller).

Knows nothing about cameras, models, HTTP or SQLite: the service plugs in through `LineBridge`
(start with callbacks, publish results, set status, read counters, stop).  Transports:
`ModbusServerBridge`, `ModbusClientBridge` (Modbus TCP, register map in REGISTERS.md) and
`SerialBridge` (framed, acknowledged serial link).  `DeadlineGuard` adds reject timing to any of them.
The transport modules import pymodbus / pyserial, so they are imported on demand here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .handshake import Alarm, HandshakeState, LineAnswer, LineBridge, Result, StackLight, StackLightSetting, Trigger

if TYPE_CHECKING:
    from .deadline import DeadlineGuard
    from .modbus_client import ModbusClientBridge
    from .modbus_server import ModbusServerBridge
    from .serial_bridge import SerialBridge

__all__ = [
    "Alarm",
    "DeadlineGuard",
    "HandshakeState",
    "LineAnswer",
    "LineBridge",
    "ModbusClientBridge",
    "ModbusServerBridge",
    "Result",
    "SerialBridge",
    "StackLight",
    "StackLightSetting",
    "Trigger",
]

_LAZY = {
    "DeadlineGuard": "deadline",
    "ModbusClientBridge": "modbus_client",
    "ModbusServerBridge": "modbus_server",
    "SerialBridge": "serial_bridge",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'firmware_bridge' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
