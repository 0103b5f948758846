"""Payloads of the serial messages (all integers big-endian; texts ASCII, length-prefixed).

TRIGGER    MCU -> appliance   trigger_seq u16, recipe u16, lot_len u8, lot, serial_len u8, serial
RESULT     appliance -> MCU   trigger_seq u16, code u16 (low byte 1 OK 2 NG 3 INVALID 4 FAILSAFE; bit 8 late)
RECIPE     MCU -> appliance   recipe u16
STATUS     appliance -> MCU   status u16 (handshake.ST_*), error u16, stack_light u8, last_trigger_seq u16,
                              lost_triggers u16
STATUS     MCU -> appliance   control u16 (bit 2 ResetError; bits as registers.CONTROL_*)
HEARTBEAT  both ways          counter u16
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .handshake import OutputImage, Result

MAX_TEXT = 64
_TRIGGER_HEAD = struct.Struct(">HH")
_RESULT = struct.Struct(">HH")
_U16 = struct.Struct(">H")
_STATUS = struct.Struct(">HHBHH")


class PayloadError(ValueError):
    """A frame with a valid CRC whose payload does not parse: a peer bug, not line noise."""


@dataclass(frozen=True)
class TriggerMsg:
    seq: int
    recipe: int
    lot: str
    serial: str


def _text(value: str, what: str) -> bytes:
    data = value.encode("ascii")
    if len(data) > MAX_TEXT:
        raise ValueError(f"{what} is {len(data)} characters, at most {MAX_TEXT} fit in a frame")
    return bytes((len(data),)) + data


def encode_trigger(msg: TriggerMsg) -> bytes:
    return _TRIGGER_HEAD.pack(msg.seq, msg.recipe) + _text(msg.lot, "lot") + _text(msg.serial, "serial")


def decode_trigger(payload: bytes) -> TriggerMsg:
    try:
        seq, recipe = _TRIGGER_HEAD.unpack_from(payload)
        position = _TRIGGER_HEAD.size
        texts = []
        for _ in range(2):
            length = payload[position]
            texts.append(payload[position + 1 : position + 1 + length])
            if len(texts[-1]) != length:
                raise PayloadError("text shorter than its length byte")
            position += 1 + length
        if position != len(payload):
            raise PayloadError(f"{len(payload) - position} trailing byte(s)")
        return TriggerMsg(seq, recipe, texts[0].decode("ascii"), texts[1].decode("ascii"))
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise PayloadError(f"bad TRIGGER payload {payload.hex()}: {exc}") from exc


def encode_result(result: Result) -> bytes:
    return _RESULT.pack(result.seq, result.code)


def decode_result(payload: bytes) -> Result:
    try:
        seq, code = _RESULT.unpack(payload)
        return Result.from_code(seq, code)
    except (struct.error, ValueError) as exc:
        raise PayloadError(f"bad RESULT payload {payload.hex()}: {exc}") from exc


def encode_u16(value: int) -> bytes:
    return _U16.pack(value & 0xFFFF)


def decode_u16(payload: bytes) -> int:
    try:
        (value,) = _U16.unpack(payload)
        return int(value)
    except struct.error as exc:
        raise PayloadError(f"expected one 16-bit value, got {payload.hex()}") from exc


def encode_status(image: OutputImage) -> bytes:
    return _STATUS.pack(image.status, image.error_code, image.stack_light, image.last_trigger_seq, image.lost_triggers)


@dataclass(frozen=True)
class StatusMsg:
    status: int
    error_code: int
    stack_light: int
    last_trigger_seq: int
    lost_triggers: int


def decode_status(payload: bytes) -> StatusMsg:
    try:
        return StatusMsg(*_STATUS.unpack(payload))
    except struct.error as exc:
        raise PayloadError(f"bad STATUS payload {payload.hex()}: {exc}") from exc
