from __future__ import annotations

import pytest

from firmware_bridge.handshake import (
    ST_ACK_ECHO,
    ST_BUSY,
    ST_ERROR,
    ST_NG,
    ST_OK,
    ST_READY,
    ST_RESULT_VALID,
    ST_STOP_LINE,
    STACK_LIGHT_CODES,
    HandshakeState,
    Result,
    seq_delta,
)


def test_seq_delta_wraps() -> None:
    assert seq_delta(1, 65535) == 2
    assert seq_delta(65535, 1) == -2
    assert seq_delta(5, 5) == 0


def test_duplicates_counted_once_and_gaps_counted_as_lost() -> None:
    state = HandshakeState()
    assert state.accept_trigger(1, "SN1", "L", 3) is not None
    assert state.accept_trigger(1, "SN1", "L", 3) is None  # repeated
    assert state.accept_trigger(4, "SN4", "L", 3) is not None  # 2 and 3 never came
    assert state.accept_trigger(4, "SN4", "L", 3) is None  # repeated
    stats = state.stats()
    assert (stats["triggers"], stats["duplicate_triggers"], stats["lost_triggers"]) == (2, 2, 2)
    assert state.output().lost_triggers == 2


def test_counter_going_back_is_a_plc_restart_not_a_duplicate() -> None:
    state = HandshakeState()
    for seq in (1, 2, 3):
        state.accept_trigger(seq, "", "", 0)
        state.publish(Result(seq, "OK"))
    assert state.accept_trigger(1, "SN-after-restart", "", 0) is not None
    assert state.publish(Result(1, "NG"))
    stats = state.stats()
    assert (stats["triggers"], stats["counter_resets"], stats["duplicate_triggers"]) == (4, 1, 0)


def test_a_trigger_waiting_for_its_result_is_never_doubled() -> None:
    state = HandshakeState()
    for seq in (1, 2, 3):
        state.accept_trigger(seq, "", "", 0)
    assert state.accept_trigger(2, "", "", 0) is None
    assert state.stats()["duplicate_triggers"] == 1


def test_counter_wraps_without_loss() -> None:
    state = HandshakeState()
    for seq in (65534, 65535, 0, 1):
        assert state.accept_trigger(seq, "", "", 0) is not None
    assert state.stats()["lost_triggers"] == 0


def test_result_fifo_levels_and_acks() -> None:
    state = HandshakeState()
    for seq in (1, 2, 3):
        state.accept_trigger(seq, f"SN{seq}", "L", 1)
    assert state.output().status & ST_BUSY
    state.publish(Result(1, "OK"))
    state.publish(Result(2, "NG"))
    image = state.output()
    assert image.status & ST_RESULT_VALID and image.status & ST_OK and not image.status & ST_NG
    assert image.ring == ((1, 1), (2, 2))
    assert image.pending == 2 and image.result_count == 2
    assert image.status & ST_BUSY  # trigger 3 still open
    assert state.ack(1) == 1
    image = state.output()
    assert image.status & ST_NG and image.ring == ((2, 2),)
    state.publish(Result(3, "INVALID"))
    assert state.ack(3) == 2  # releases 2 and 3
    image = state.output()
    assert not image.status & (ST_RESULT_VALID | ST_BUSY) and image.pending == 0
    assert state.ack(3) == 0 and state.stats()["duplicate_acks"] == 1
    assert state.ack(77) is None and state.stats()["bad_acks"] == 1


def test_one_result_per_trigger() -> None:
    state = HandshakeState()
    state.accept_trigger(1, "", "", 0)
    assert state.publish(Result(1, "OK"))
    assert not state.publish(Result(1, "NG"))  # a second verdict for the same part
    assert not state.publish(Result(9, "OK"))  # never triggered
    assert state.stats()["rejected_results"] == 2
    assert state.stats()["results"] == 1


def test_ring_shows_oldest_slots_and_keeps_the_rest() -> None:
    state = HandshakeState(ring_size=8)
    for seq in range(1, 13):
        state.accept_trigger(seq, "", "", 0)
        state.publish(Result(seq, "OK"))
    image = state.output()
    assert image.pending == 12 and [s for s, _ in image.ring] == list(range(1, 9))
    state.ack(8)
    assert [s for s, _ in state.output().ring] == [9, 10, 11, 12]


def test_level_only_handshake() -> None:
    state = HandshakeState()
    trigger = state.trigger_level(True, "SN", "L", 2)
    assert trigger is not None and trigger.seq == 1
    assert state.trigger_level(True, "SN", "L", 2) is None  # level held: no new part
    state.publish(Result(1, "NG"))
    assert state.output().status & ST_RESULT_VALID
    assert state.ack_level(True) == 1
    image = state.output()
    assert image.status & ST_ACK_ECHO and not image.status & ST_RESULT_VALID
    state.ack_level(False)
    state.trigger_level(False, "", "", 2)
    assert state.trigger_level(True, "SN2", "L", 2) is not None


def test_status_error_stop_line_and_stack_light() -> None:
    state = HandshakeState()
    image = state.output()
    assert image.status & ST_READY and image.stack_light == STACK_LIGHT_CODES["green"]
    state.set_status(error=7)
    image = state.output()
    assert image.status & ST_ERROR and not image.status & ST_READY
    assert image.error_code == 7 and image.stack_light == STACK_LIGHT_CODES["red"]
    state.reset_error()
    state.set_status(ready=False)
    assert state.output().stack_light == STACK_LIGHT_CODES["amber"]
    state.set_status(ready=True, stop_line=True)
    assert state.output().status & ST_STOP_LINE and state.output().stack_light == STACK_LIGHT_CODES["red"]
    state.set_status(stack_light="amber")
    assert state.output().stack_light == STACK_LIGHT_CODES["amber"]
    state.set_status(stack_light="auto", stop_line=False)
    assert state.output().stack_light == STACK_LIGHT_CODES["green"]
    with pytest.raises(ValueError):
        state.set_status(stack_light="blue")  # type: ignore[arg-type]
