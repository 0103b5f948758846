"""Modbus register map of the line handshake (holding registers, 0-based). See REGISTERS.md.

Registers 0..27 are written by the PLC, 32..63 are written by the appliance. In server mode the
appliance hosts the map and refuses writes outside 0..27; in client mode the PLC hosts the same map
and the appliance polls 0..27 and writes 32..63.
"""

from __future__ import annotations

from .handshake import OutputImage

# PLC -> appliance
REG_CONTROL = 0  # bit 0 Trigger level, bit 1 Ack level, bit 2 ResetError (level-only PLCs)
REG_TRIGGER_SEQ = 1  # incremented by the PLC once per part; latches recipe, lot and serial
REG_ACK_SEQ = 2  # sequence of the last result the PLC consumed
REG_RECIPE = 3  # product / recipe number, 0..MAX_RECIPE
REG_LOT = 4  # 8 registers, 16 ASCII characters, 2 per register (high byte first), NUL padded
LOT_REGS = 8
REG_SERIAL = 12  # 16 registers, 32 ASCII characters
SERIAL_REGS = 16
INPUT_END = 28  # first address past the PLC-written block

# appliance -> PLC
OUTPUT_START = 32
REG_STATUS = 32  # level bits, see handshake.ST_*
REG_ERROR_CODE = 33
REG_HEARTBEAT = 34  # +1 every heartbeat interval while the bridge runs
REG_STACK_LIGHT = 35  # 0 off, 1 green, 2 amber, 3 red
REG_LAST_TRIGGER_SEQ = 36  # last trigger sequence accepted
REG_RESULT_COUNT = 37  # results published, modulo 65536
REG_PENDING = 38  # results published and not yet acknowledged
REG_LOST_TRIGGERS = 39  # trigger sequences skipped by the PLC, modulo 65536
REG_ACTIVE_RECIPE = 40
REG_RING = 48  # RING_SLOTS x (seq, code): oldest unacknowledged result first; code 0 = empty slot
RING_SLOTS = 8
MAP_END = REG_RING + 2 * RING_SLOTS  # 64

CONTROL_TRIGGER = 1 << 0
CONTROL_ACK = 1 << 1
CONTROL_RESET_ERROR = 1 << 2
CONTROL_MASK = CONTROL_TRIGGER | CONTROL_ACK | CONTROL_RESET_ERROR
MAX_RECIPE = 999


def encode_text(text: str, regs: int) -> list[int]:
    """ASCII text into `regs` registers, two characters each, high byte first, NUL padded."""
    data = text.encode("ascii")[: regs * 2].ljust(regs * 2, b"\0")
    return [(data[i] << 8) | data[i + 1] for i in range(0, len(data), 2)]


def decode_text(registers: list[int]) -> str:
    data = b"".join(bytes(((value >> 8) & 0xFF, value & 0xFF)) for value in registers)
    return data.split(b"\0", 1)[0].decode("ascii", errors="replace")


def text_registers_valid(registers: list[int]) -> bool:
    """Every byte printable ASCII or NUL."""
    return all(byte == 0 or 0x20 <= byte <= 0x7E for value in registers for byte in ((value >> 8) & 0xFF, value & 0xFF))


def input_value_valid(address: int, value: int) -> bool:
    """Is `value` acceptable for the PLC-written register at `address`?"""
    if address == REG_CONTROL:
        return value & ~CONTROL_MASK == 0
    if address == REG_RECIPE:
        return 0 <= value <= MAX_RECIPE
    if REG_LOT <= address < INPUT_END:
        return text_registers_valid([value])
    return 0 <= value <= 0xFFFF


def output_registers(image: OutputImage) -> list[int]:
    """The appliance-written block OUTPUT_START..MAP_END-1 for a snapshot."""
    block = [0] * (MAP_END - OUTPUT_START)
    block[REG_STATUS - OUTPUT_START] = image.status
    block[REG_ERROR_CODE - OUTPUT_START] = image.error_code
    block[REG_HEARTBEAT - OUTPUT_START] = image.heartbeat
    block[REG_STACK_LIGHT - OUTPUT_START] = image.stack_light
    block[REG_LAST_TRIGGER_SEQ - OUTPUT_START] = image.last_trigger_seq
    block[REG_RESULT_COUNT - OUTPUT_START] = image.result_count
    block[REG_PENDING - OUTPUT_START] = image.pending
    block[REG_LOST_TRIGGERS - OUTPUT_START] = image.lost_triggers
    block[REG_ACTIVE_RECIPE - OUTPUT_START] = image.active_recipe
    for slot, (seq, code) in enumerate(image.ring):
        block[REG_RING - OUTPUT_START + 2 * slot] = seq
        block[REG_RING - OUTPUT_START + 2 * slot + 1] = code
    return block
