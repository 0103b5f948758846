"""The appliance as Modbus TCP server: the PLC writes triggers/acks and reads results (pymodbus)."""

from __future__ import annotations

import asyncio
import logging
import threading

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from .core import BridgeCore
from .handshake import AlarmHandler, RecipeHandler, TriggerHandler
from .registers import INPUT_END, MAP_END, OUTPUT_START, REG_ACK_SEQ, input_value_valid, output_registers

log = logging.getLogger(__name__)

READ_CODES = {3, 4}  # read holding / input registers
WRITE_CODES = {6, 16}  # write single / multiple registers


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, on_trigger: TriggerHandler, on_recipe: RecipeHandler, on_alarm: AlarmHandler | None = None) -> None:
        self._start_core(on_trigger, on_recipe, on_alarm)
        self._thread = threading.Thread(target=self._serve, name="modbus-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            self.stop()
            raise RuntimeError(f"Modbus server could not listen on {self.host}:{self.port}: {self._error}")

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
            except Exception:
                log.exception("Modbus server shutdown failed")
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._stop_core()

    # ----- server thread ----------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()

        # The whole address space is defined so that every request reaches the action and is counted.
        def whole_space() -> list[SimData]:
            return [SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)]

        devices = [SimDevice(id=self.unit_id, simdata=whole_space(), action=self._action)]
        if self.unit_id != 0:  # id 0 stands for every other unit id
            devices.append(SimDevice(id=0, simdata=whole_space(), action=self._wrong_unit))
        self._server = ModbusTcpServer(devices, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        heartbeat = asyncio.create_task(self._heartbeat())
        self._ready.set()
        try:
            await self._server.serving
        finally:
            heartbeat.cancel()

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
