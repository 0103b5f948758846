"""A pymodbus Modbus TCP server on a background event loop: the appliance's server bridge and the
simulated PLC's register server both run on it, and nothing else here touches pymodbus' server side.

The datastore is pymodbus' SimData/SimDevice. Its package (`pymodbus.simulator`) still calls itself
experimental, but it is the server's datastore since 3.12 and the supported one since 3.13: the
API changes of 3.13 deprecate ModbusServerContext/ModbusDeviceContext/ModbusSequentialDataBlock
("please use simData instead"; the server converts them to SimDevice and they go in v4), and the
server documentation says the legacy datastores will be replaced by SimData/SimDevice. A SimDevice
`action` is the only hook that sees every request and may answer it with a Modbus exception, which
the register map's validation needs (the legacy datastores lost their get/setValues hooks in 3.13).
The action's arguments are those of 3.13 on (3.12 passed others): hence `pymodbus>=3.13`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

__all__ = ["ExcCodes", "SimAction", "SimDevice", "TcpServerThread", "register_device"]

log = logging.getLogger(__name__)

Companion = Callable[[], Coroutine[Any, Any, None]]


def register_device(unit_id: int, count: int, action: SimAction | None = None) -> SimDevice:
    """A unit whose registers 0..count-1 (one block shared by all function codes) start at 0.

    `action(function_code, start_address, address, count, registers, values)` runs before each
    request is served: it may change `registers` (the whole block) or refuse with an ExcCodes;
    `values` is None for reads and for the read-back that follows a write. Unit id 0 stands for
    every unit id not defined otherwise.
    """
    return SimDevice(id=unit_id, simdata=[SimData(0, count=count, values=0, datatype=DataType.REGISTERS)],
                     action=action)


class TcpServerThread:
    """Serves `devices` on host:port from a daemon thread; `companion` runs beside it on the same loop."""

    def __init__(self, host: str, port: int, devices: list[SimDevice], name: str,
                 companion: Companion | None = None) -> None:
        self.host, self.port, self.name = host, port, name
        self._devices, self._companion = devices, companion
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Listen, or raise RuntimeError with the reason (address in use, ...)."""
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            self.stop()
            raise RuntimeError(f"{self.name} could not listen on {self.host}:{self.port}: {self._error}")

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
            except Exception:
                log.exception("%s: shutdown failed", self.name)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(), which raises it in the caller's thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(self._devices, address=(self.host, self.port))
        await self._server.serve_forever(background=True)
        companion = asyncio.create_task(self._companion()) if self._companion is not None else None
        self._ready.set()
        try:
            await self._server.serving
        finally:
            if companion is not None:
                companion.cancel()
