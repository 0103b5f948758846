"""The appliance as Modbus TCP server: the PLC writes triggers/acks and reads results (pymodbus)."""

from __future__ import annotations

import asyncio

from .core import BridgeCore
from .handshake import AlarmHandler, RecipeHandler, TriggerHandler
from .modbus_tcp import ExcCodes, TcpServerThread, register_device
from .registers import INPUT_END, MAP_END, OUTPUT_START, REG_ACK_SEQ, input_value_valid, output_registers

READ_CODES = {3, 4}  # read holding / input registers
WRITE_CODES = {6, 16}  # write single / multiple registers
WHOLE_SPACE = 65536  # registers defined per unit


class ModbusServerBridge(BridgeCore):
    """LineBridge served over Modbus TCP; the register map is in REGISTERS.md.

    Requests outside the map, writes to appliance registers, bad values and other function codes get
    Modbus exception responses and are counted (`rejected_reads`, `rejected_writes`, ...); nothing
    else changes.  Requests to another unit id are answered with GATEWAY_NO_RESPONSE.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5020, unit_id: int = 1, heartbeat_s: float = 0.1) -> None:
        super().__init__("modbus-server")
        self.host, self.port, self.unit_id, self.heartbeat_s = host, port, unit_id, heartbeat_s
        self._inputs = [0] * INPUT_END
        self._server: TcpServerThread | None = None

    def start(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None) -> None:
        self._start_core(on_trigger, on_recipe, on_alarm)
        # The whole address space is defined so that every request reaches the action and is counted.
        devices = [register_device(self.unit_id, WHOLE_SPACE, self._action)]
        if self.unit_id != 0:  # id 0 stands for every other unit id
            devices.append(register_device(0, WHOLE_SPACE, self._wrong_unit))
        self._server = TcpServerThread(self.host, self.port, devices, "modbus-server", companion=self._heartbeat)
        try:
            self._server.start()
        except RuntimeError:
            self._stop_core()
            raise

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._stop_core()

    # ----- on the server's event loop ----------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.state.beat()

    async def _wrong_unit(self, *_: object) -> ExcCodes:
        self.count("wrong_unit")
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """Validate every request; apply PLC writes to the handshake; refresh outputs before reads."""
        del start_address  # the block starts at 0
        if values is None:  # a read, or the read-back that follows a write
            if function_code not in READ_CODES | WRITE_CODES:
                self.count("rejected_functions")
                return ExcCodes.ILLEGAL_FUNCTION
            if address + count > MAP_END:
                self.count("rejected_reads")
                return ExcCodes.ILLEGAL_ADDRESS
            if address + count > OUTPUT_START:
                registers[OUTPUT_START:MAP_END] = output_registers(self.state.output())
            return None
        if function_code not in WRITE_CODES:
            self.count("rejected_functions")
            return ExcCodes.ILLEGAL_FUNCTION
        new_values = [int(v) for v in values]
        if address + len(new_values) > INPUT_END:
            self.count("rejected_writes")
            return ExcCodes.ILLEGAL_ADDRESS
        updated = list(self._inputs)
        updated[address : address + len(new_values)] = new_values
        for offset, value in enumerate(new_values):
            if not input_value_valid(address + offset, value):
                self.count("rejected_writes")
                return ExcCodes.ILLEGAL_VALUE
        ack = updated[REG_ACK_SEQ]
        if ack != self._inputs[REG_ACK_SEQ] and not self.state.ack_is_valid(ack):
            self.count("rejected_writes")
            self.state.ack(ack)  # counted as bad_acks
            return ExcCodes.ILLEGAL_VALUE
        old, self._inputs = self._inputs, updated
        self.apply_input_block(old, updated)
        return None
