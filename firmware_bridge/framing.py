"""Frames on the serial line to the microcontroller.

    0xA5 | LEN (1) | SEQ (2, big-endian) | TYPE (1) | PAYLOAD (LEN bytes) | CRC (2, big-endian)

CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor; check value
0x29B1 for b"123456789") over LEN, SEQ, TYPE and PAYLOAD. The decoder resynchronises after
garbage, truncated frames and wrong CRCs by dropping the start byte it locked on and searching for
the next 0xA5; a partial frame left without new bytes for `partial_timeout_s` is dropped too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

START = 0xA5
MAX_PAYLOAD = 200
HEADER = struct.Struct(">BHB")  # LEN, SEQ, TYPE
OVERHEAD = 1 + HEADER.size + 2


class MsgType(IntEnum):
    TRIGGER = 0x01  # MCU -> appliance
    RESULT = 0x02  # appliance -> MCU
    ACK = 0x03  # both ways: SEQ is the acknowledged frame's sequence; never acknowledged itself
    RECIPE = 0x04  # MCU -> appliance
    STATUS = 0x05  # appliance -> MCU: status word etc.; MCU -> appliance: control bits
    HEARTBEAT = 0x06  # both ways


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16_ccitt_false(data: bytes, crc: int = 0xFFFF) -> int:
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


@dataclass(frozen=True)
class Frame:
    seq: int
    type: int
    payload: bytes = b""


def encode_frame(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    body = HEADER.pack(len(frame.payload), frame.seq & 0xFFFF, frame.type) + frame.payload
    return bytes((START,)) + body + struct.pack(">H", crc16_ccitt_false(body))


@dataclass
class FrameDecoder:
    """Streaming decoder: feed it bytes as they come, get whole, CRC-checked frames back."""

    partial_timeout_s: float = 0.05
    crc_errors: int = 0
    resyncs: int = 0  # times bytes were skipped to find a frame start
    bad_lengths: int = 0
    truncated: int = 0  # partial frames dropped after partial_timeout_s of silence
    _buffer: bytearray = field(default_factory=bytearray)
    _last_byte_at: float = 0.0

    def feed(self, data: bytes, now: float) -> list[Frame]:
        if data:
            self._buffer += data
            self._last_byte_at = now
        frames: list[Frame] = []
        buffer = self._buffer
        while buffer:
            if buffer[0] != START:
                start = buffer.find(START)
                del buffer[: start if start >= 0 else len(buffer)]
                self.resyncs += 1
                continue
            if len(buffer) < 1 + HEADER.size:
                break
            length, seq, msg_type = HEADER.unpack_from(buffer, 1)
            if length > MAX_PAYLOAD:
                self.bad_lengths += 1
                del buffer[:1]
                continue
            total = OVERHEAD + length
            if len(buffer) < total:
                later = self._complete_frame_after(0)
                if later is None:
                    break
                self.truncated += 1  # a whole frame follows a cut-off one: do not wait for the rest
                del buffer[:later]
                continue
            body = bytes(buffer[1 : total - 2])
            (crc,) = struct.unpack_from(">H", buffer, total - 2)
            if crc != crc16_ccitt_false(body):
                self.crc_errors += 1
                del buffer[:1]  # the start byte was garbage or the frame is damaged: search again
                continue
            frames.append(Frame(seq, msg_type, body[HEADER.size :]))
            del buffer[:total]
        return frames

    def _complete_frame_after(self, position: int) -> int | None:
        """Offset of the first later START that begins a complete frame with a valid CRC."""
        buffer = self._buffer
        start = buffer.find(START, position + 1)
        while start >= 0:
            if len(buffer) - start >= 1 + HEADER.size:
                length = buffer[start + 1]
                end = start + OVERHEAD + length
                if length <= MAX_PAYLOAD and end <= len(buffer):
                    (crc,) = struct.unpack_from(">H", buffer, end - 2)
                    if crc == crc16_ccitt_false(bytes(buffer[start + 1 : end - 2])):
                        return start
            start = buffer.find(START, start + 1)
        return None

    def expire(self, now: float) -> None:
        """Drop a partial frame whose rest never came (the next frame would otherwise be delayed)."""
        if self._buffer and now - self._last_byte_at > self.partial_timeout_s:
            self.truncated += 1
            del self._buffer[:1]
            self.feed(b"", now)
