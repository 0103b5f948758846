"""Helpers and fixtures shared by the firmware_bridge tests.

Not a conftest.py on purpose: the root tests import `conftest` by name, and a second conftest
module in a sub-folder would shadow it. Test modules import the fixtures they use from here.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from firmware_bridge.handshake import Alarm, Result, Trigger
from firmware_bridge.modbus_server import ModbusServerBridge
from firmware_bridge.pty_pair import PtyPair


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class ServiceSide:
    """What the tests plug into a bridge: a parity judge and a record of every callback."""

    def __init__(self, publish: Callable[[Result], None] | None, judge: bool = True) -> None:
        self.publish = publish
        self.judge = judge
        self.triggers: list[Trigger] = []
        self.recipes: list[int] = []
        self.alarms: list[Alarm] = []
        self.lock = threading.Lock()

    def on_trigger(self, trigger: Trigger) -> None:
        with self.lock:
            self.triggers.append(trigger)
        if self.judge and self.publish is not None:
            self.publish(Result(trigger.seq, "OK" if trigger.seq % 2 == 0 else "NG"))

    def on_recipe(self, recipe: int) -> None:
        self.recipes.append(recipe)

    def on_alarm(self, alarm: Alarm) -> None:
        self.alarms.append(alarm)

    def alarm_kinds(self) -> list[str]:
        return [alarm.kind for alarm in self.alarms]


@pytest.fixture(name="modbus_bridge")
def modbus_bridge_fixture() -> Iterator[tuple[ModbusServerBridge, ServiceSide]]:
    bridge = ModbusServerBridge("127.0.0.1", free_port(), unit_id=1)
    service = ServiceSide(bridge.publish)
    bridge.start(service.on_trigger, service.on_recipe, service.on_alarm)
    yield bridge, service
    bridge.stop()


@pytest.fixture(name="pty_pair")
def pty_pair_fixture() -> Iterator[tuple[str, str]]:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (apt-get install socat): no PTY pair")
    with PtyPair() as ends:
        yield ends
