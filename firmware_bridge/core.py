"""What every LineBridge implementation shares: handshake state, callback thread, alarms, counters."""

from __future__ import annotations

import logging
import threading
from collections import Counter

from .handshake import (
    Alarm,
    AlarmHandler,
    CallbackDispatcher,
    HandshakeState,
    RecipeHandler,
    Result,
    StackLightSetting,
    Trigger,
    TriggerHandler,
)
from .registers import (
    CONTROL_ACK,
    CONTROL_RESET_ERROR,
    CONTROL_TRIGGER,
    INPUT_END,
    LOT_REGS,
    REG_ACK_SEQ,
    REG_CONTROL,
    REG_LOT,
    REG_RECIPE,
    REG_SERIAL,
    REG_TRIGGER_SEQ,
    SERIAL_REGS,
    decode_text,
)

log = logging.getLogger(__name__)

# Counters every bridge reports, 0 where the transport cannot have them, so dashboards see one shape.
COMMON_COUNTERS = ("retries", "crc_errors", "resyncs", "rejected_writes", "link_down", "comm_errors")


class BridgeCore:
    """Base of the bridges: the service-facing half of LineBridge, transport-agnostic."""

    def __init__(self, name: str, ring_size: int = 8) -> None:
        self.name = name
        self.state = HandshakeState(ring_size)
        self._dispatcher = CallbackDispatcher(name=f"{name}-callbacks")
        self._on_trigger: TriggerHandler | None = None
        self._on_recipe: RecipeHandler | None = None
        self._on_alarm: AlarmHandler | None = None
        self._link_counters: Counter[str] = Counter()
        self._counter_lock = threading.Lock()

    # ----- LineBridge -------------------------------------------------------------------------

    def _start_core(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None) -> None:
        self._on_trigger, self._on_recipe, self._on_alarm = on_trigger, on_recipe, on_alarm
        self._dispatcher.start()

    def _stop_core(self) -> None:
        self._dispatcher.stop()

    def publish(self, result: Result) -> None:
        if self.state.publish(result):
            self._result_published(result)

    def set_status(
        self,
        *,
        ready: bool | None = None,
        busy: bool | None = None,
        error: int | None = None,
        stack_light: StackLightSetting | None = None,
        stop_line: bool | None = None,
    ) -> None:
        self.state.set_status(ready=ready, busy=busy, error=error, stack_light=stack_light, stop_line=stop_line)
        self._status_changed()

    def stats(self) -> dict[str, int]:
        merged = dict.fromkeys(COMMON_COUNTERS, 0)
        merged.update(self.state.stats())
        with self._counter_lock:
            merged.update(self._link_counters)
        return merged

    # ----- hooks for transports ---------------------------------------------------------------

    def _result_published(self, result: Result) -> None:
        """A result entered the FIFO: push it to the peer (transports that push)."""

    def _status_changed(self) -> None:
        """Status bits changed: push them to the peer (transports that push)."""

    def count(self, key: str, n: int = 1) -> None:
        with self._counter_lock:
            self._link_counters[key] += n

    def alarm(self, kind: str, message: str) -> None:
        log.warning("%s: %s", self.name, message)
        self.count(f"alarm_{kind}")
        handler = self._on_alarm
        if handler is not None:
            self._dispatcher.submit(lambda: handler(Alarm(kind, message)))

    def deliver_trigger(self, trigger: Trigger) -> None:
        handler = self._on_trigger
        if handler is not None:
            self._dispatcher.submit(lambda: handler(trigger))

    def deliver_recipe(self, recipe: int) -> None:
        handler = self._on_recipe
        if handler is not None:
            self._dispatcher.submit(lambda: handler(recipe))

    def accept_trigger(self, seq: int, serial: str, lot: str, recipe: int) -> None:
        """Feed one trigger counter value from the wire: dedup, gap and reset alarms, delivery."""
        before = self.state.stats()
        trigger = self.state.accept_trigger(seq, serial, lot, recipe)
        after = self.state.stats()
        lost = after["lost_triggers"] - before["lost_triggers"]
        if lost:
            self.alarm(
                "lost_trigger", f"trigger sequence jumped to {seq}: {lost} trigger(s) never reached the appliance"
            )
        if after["counter_resets"] > before["counter_resets"]:
            self.alarm("trigger_counter_reset", f"trigger sequence went back to {seq}: did the PLC restart?")
        if trigger is not None:
            self.deliver_trigger(trigger)

    def apply_input_block(self, old: list[int], new: list[int]) -> None:
        """Apply the PLC-written registers 0..INPUT_END-1 (Modbus, both modes) after a change."""
        assert len(old) == len(new) == INPUT_END
        recipe = new[REG_RECIPE]
        if recipe != old[REG_RECIPE] and self.state.set_recipe(recipe):
            self.deliver_recipe(recipe)
        control, old_control = new[REG_CONTROL], old[REG_CONTROL]
        if control & CONTROL_RESET_ERROR and not old_control & CONTROL_RESET_ERROR:
            self.state.reset_error()
            self.alarm("reset_error", "the PLC asked to reset the error state")
        lot = decode_text(new[REG_LOT : REG_LOT + LOT_REGS])
        serial = decode_text(new[REG_SERIAL : REG_SERIAL + SERIAL_REGS])
        if new[REG_TRIGGER_SEQ] != old[REG_TRIGGER_SEQ]:
            self.accept_trigger(new[REG_TRIGGER_SEQ], serial, lot, recipe)
        if (control ^ old_control) & CONTROL_TRIGGER:
            trigger = self.state.trigger_level(bool(control & CONTROL_TRIGGER), serial, lot, recipe)
            if trigger is not None:
                self.deliver_trigger(trigger)
        if new[REG_ACK_SEQ] != old[REG_ACK_SEQ] and self.state.ack(new[REG_ACK_SEQ]) is None:
            self.alarm("bad_ack", f"PLC acknowledged result {new[REG_ACK_SEQ]}, which was never published")
        if (control ^ old_control) & CONTROL_ACK:
            self.state.ack_level(bool(control & CONTROL_ACK))
