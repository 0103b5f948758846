from __future__ import annotations

import pytest

from firmware_bridge.framing import MAX_PAYLOAD, START, Frame, FrameDecoder, MsgType, crc16_ccitt_false, encode_frame
from firmware_bridge.handshake import Result
from firmware_bridge.messages import (
    PayloadError,
    TriggerMsg,
    decode_result,
    decode_trigger,
    encode_result,
    encode_trigger,
)


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"123456789", 0x29B1),  # the catalogue check value of CRC-16/CCITT-FALSE
        (b"A", 0xB915),
        (b"", 0xFFFF),
        (bytes(range(256)), None),  # compared with the bitwise reference below
    ],
)
def test_crc16_ccitt_false_vectors(data: bytes, crc: int | None) -> None:
    def bitwise(payload: bytes) -> int:
        value = 0xFFFF
        for byte in payload:
            value ^= byte << 8
            for _ in range(8):
                value = ((value << 1) ^ 0x1021) & 0xFFFF if value & 0x8000 else (value << 1) & 0xFFFF
        return value

    assert crc16_ccitt_false(data) == bitwise(data)
    if crc is not None:
        assert crc16_ccitt_false(data) == crc


def test_frame_layout_is_fixed() -> None:
    raw = encode_frame(Frame(0x1234, MsgType.RESULT, b"\x00\x07\x00\x01"))
    assert raw[:6] == bytes([START, 4, 0x12, 0x34, 0x02, 0x00])
    assert raw[-2:] == crc16_ccitt_false(raw[1:-2]).to_bytes(2, "big")
    assert len(raw) == 1 + 4 + 4 + 2


def test_round_trip_byte_by_byte() -> None:
    frames = [Frame(i, MsgType.TRIGGER, bytes([i]) * i) for i in range(1, 6)]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for index in range(len(stream)):
        out += decoder.feed(stream[index : index + 1], now=0.0)
    assert out == frames
    assert decoder.crc_errors == decoder.resyncs == 0


def test_resync_after_garbage_truncation_and_wrong_crc() -> None:
    good = [Frame(10 + i, MsgType.HEARTBEAT, bytes([i, i])) for i in range(4)]
    damaged = bytearray(encode_frame(Frame(99, MsgType.TRIGGER, b"xyz")))
    damaged[-1] ^= 0xFF  # wrong CRC
    truncated = encode_frame(Frame(98, MsgType.TRIGGER, b"0123456789"))[:7]
    stream = (
        b"\x00\xff garbage \xa5\xa5\x01"  # garbage, including stray start bytes
        + encode_frame(good[0])
        + truncated
        + encode_frame(good[1])
        + bytes(damaged)
        + encode_frame(good[2])
        + bytes([START, 250, 0, 0, 1])  # a length no frame can have
        + encode_frame(good[3])
    )
    decoder = FrameDecoder()
    assert decoder.feed(stream, now=0.0) == good
    assert decoder.crc_errors >= 1
    assert decoder.resyncs >= 1
    assert decoder.truncated >= 1
    assert decoder.bad_lengths >= 1


def test_partial_frame_expires_after_silence() -> None:
    decoder = FrameDecoder(partial_timeout_s=0.05)
    assert decoder.feed(encode_frame(Frame(1, MsgType.ACK, b"abcdef"))[:5], now=0.0) == []
    decoder.expire(now=0.2)
    assert decoder.truncated == 1
    assert decoder.feed(encode_frame(Frame(2, MsgType.ACK)), now=0.3) == [Frame(2, MsgType.ACK)]


def test_payload_too_long_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(Frame(1, MsgType.TRIGGER, bytes(MAX_PAYLOAD + 1)))


def test_message_payloads_round_trip_and_reject_garbage() -> None:
    msg = TriggerMsg(seq=65535, recipe=12, lot="LOT-7", serial="SN-000123")
    assert decode_trigger(encode_trigger(msg)) == msg
    result = Result(seq=42, decision="FAILSAFE", late=True)
    assert decode_result(encode_result(result)) == result
    with pytest.raises(PayloadError):
        decode_trigger(b"\x00\x01\x00\x02\x09ab")
    with pytest.raises(PayloadError):
        decode_result(b"\x00\x01\x00\x09")  # decision code 9
