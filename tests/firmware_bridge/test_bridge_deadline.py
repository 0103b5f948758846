"""Reject timing: a verdict that misses its deadline is replaced by the fail-safe, exactly once."""

from __future__ import annotations

import threading

import pytest
from bridge_helpers import free_port, wait_until

from firmware_bridge.deadline import DeadlineGuard
from firmware_bridge.handshake import Result, Trigger
from firmware_bridge.modbus_server import ModbusServerBridge
from firmware_bridge.plc_sim import run_simulation


def test_late_verdicts_become_failsafe_at_the_deadline() -> None:
    late: list[Result] = []
    inner = ModbusServerBridge("127.0.0.1", free_port(), unit_id=1)
    guard = DeadlineGuard(inner, deadline_s=0.05, on_late=late.append)
    timers: list[threading.Timer] = []

    def judge(trigger: Trigger) -> None:
        verdict = Result(trigger.seq, "OK")
        if trigger.seq % 2:  # odd parts: judged at once
            guard.publish(verdict)
        else:  # even parts: the judge takes 150 ms, three times the deadline
            timer = threading.Timer(0.15, guard.publish, args=(verdict,))
            timers.append(timer)
            timer.start()

    guard.start(judge, lambda _recipe: None)
    try:
        report = run_simulation("modbus", f"127.0.0.1:{inner.port}", parts=20, rate_hz=100, timeout_s=10)
        wait_until(lambda: len(late) == 10, what="late verdicts reported")
    finally:
        for timer in timers:
            timer.join()
        guard.stop()
    assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (20, 20, 0, 0)
    assert report.late == 10 and report.decisions == {"OK": 10, "FAILSAFE": 10}
    assert report.max_ms < 150  # nobody waited for the slow judge
    assert all(result.late and result.decision == "OK" for result in late)
    stats = guard.stats()
    assert stats["failsafe_results"] == 10 and stats["late_verdicts"] == 10 and stats["rejected_results"] == 0


def test_deadline_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DeadlineGuard(ModbusServerBridge(), deadline_s=0)
