"""The appliance as Modbus TCP client: it polls a PLC that hosts the register map of REGISTERS.md.

Each poll reads the PLC-written block (0..27) and writes the appliance block (32..63). Polling
sees only the latest trigger counter: a PLC that triggers twice within one poll interval loses the
first part's serial (the skipped sequence is counted as a lost trigger and alarmed). Such a PLC
should wait for LAST_TRIGGER_SEQ to echo its trigger, or use the appliance as server.
"""

from __future__ import annotations

import logging
import threading
import time

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from .core import BridgeCore
from .handshake import ERR_LINK_DOWN, AlarmHandler, RecipeHandler, TriggerHandler
from .registers import INPUT_END, OUTPUT_START, REG_RECIPE, REG_TRIGGER_SEQ, output_registers

log = logging.getLogger(__name__)


class ModbusClientBridge(BridgeCore):
    """LineBridge that polls the PLC every `poll_interval_s`; reconnects after link failures."""

    def __init__(
        self, host: str, port: int = 502, unit_id: int = 1, poll_interval_s: float = 0.01, timeout_s: float = 1.0
    ) -> None:
        super().__init__("modbus-client")
        self.host, self.port, self.unit_id = host, port, unit_id
        self.poll_interval_s = poll_interval_s
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
        self._inputs: list[int] | None = None  # None until the first successful read
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._link_up = True
        self._wake = threading.Event()

    def start(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None) -> None:
        self._start_core(on_trigger, on_recipe, on_alarm)
        self._thread = threading.Thread(target=self._run, name="modbus-client", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._client.close()
        self._stop_core()

    def _result_published(self, result: object) -> None:
        self._wake.set()  # write the result at once instead of at the next poll

    def _status_changed(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        next_beat = time.monotonic()
        while not self._stopping.is_set():
            started = time.monotonic()
            if started >= next_beat:
                self.state.beat()
                next_beat = started + 0.1
            try:
                self._poll_once()
                self._set_link(True)
            except (ModbusException, OSError, ConnectionError) as exc:
                self.count("comm_errors")
                self._set_link(False, str(exc))
                self._client.close()
                self._stopping.wait(min(1.0, max(0.1, 10 * self.poll_interval_s)))
                continue
            self._wake.wait(max(0.0, self.poll_interval_s - (time.monotonic() - started)))
            self._wake.clear()

    def _poll_once(self) -> None:
        if not self._client.connected and not self._client.connect():
            raise ConnectionError(f"cannot connect to PLC at {self.host}:{self.port}")
        response = self._client.read_holding_registers(0, count=INPUT_END, device_id=self.unit_id)
        if response.isError():
            raise ModbusException(f"PLC answered read of registers 0..{INPUT_END - 1} with {response}")
        self.count("polls")
        inputs = list(response.registers)
        if self._inputs is None:
            # First contact: adopt the PLC's counters as they are, so old triggers are not replayed.
            self._inputs = list(inputs)
            self.state.set_trigger_baseline(inputs[REG_TRIGGER_SEQ])
            if self.state.set_recipe(inputs[REG_RECIPE]):
                self.deliver_recipe(inputs[REG_RECIPE])
        if inputs != self._inputs:
            old, self._inputs = self._inputs, inputs
            self.apply_input_block(old, inputs)
        written = self._client.write_registers(
            OUTPUT_START, output_registers(self.state.output()), device_id=self.unit_id
        )
        if written.isError():
            raise ModbusException(f"PLC refused the write of the appliance registers: {written}")

    def _set_link(self, up: bool, reason: str = "") -> None:
        if up == self._link_up:
            return
        self._link_up = up
        self.state.set_link_down(not up)
        if up:
            self.alarm("link_up", f"PLC at {self.host}:{self.port} answers again")
        else:
            self.count("link_down")
            self.alarm("link_down", f"PLC at {self.host}:{self.port} unreachable (error {ERR_LINK_DOWN:#x}): {reason}")
