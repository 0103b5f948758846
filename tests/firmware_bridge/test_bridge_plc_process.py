"""The simulated PLC in its own process, the line targets it is held to, and the one module that
stands on pymodbus' server datastore."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from bridge_helpers import free_port

from firmware_bridge.line_targets import P99_TARGET_MS, check_line_targets
from firmware_bridge.modbus_server import ModbusServerBridge
from firmware_bridge.plc_process import PlcProcessError, run_plc_process
from firmware_bridge.plc_sim import SimulationReport, parity_judge

ROOT = Path(__file__).resolve().parents[2]


def test_plc_process_fires_from_another_process_and_reads_every_result() -> None:
    bridge = ModbusServerBridge("127.0.0.1", free_port())
    bridge.start(parity_judge(bridge.publish), lambda _: None)
    try:
        report = run_plc_process("modbus", f"127.0.0.1:{bridge.port}/1", parts=30, rate_hz=100, timeout_s=20,
                                 lot="LOT-P", recipe=1)
    finally:
        bridge.stop()
    assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (30, 30, 0, 0)
    assert report.decisions == {"OK": 15, "NG": 15}
    assert bridge.stats()["triggers"] == 30  # the appliance saw them: they came over the wire


def test_plc_process_failure_is_an_error_with_the_reason() -> None:
    closed = free_port()
    with pytest.raises(PlcProcessError, match="cannot connect"):
        run_plc_process("modbus", f"127.0.0.1:{closed}", parts=3, rate_hz=10, timeout_s=5)


def good_report(**changes: object) -> SimulationReport:
    report = SimulationReport(bridge="modbus", triggers=750, verdicts=750, lost=0, duplicated=0, late=0, p50_ms=38.0,
                              p99_ms=55.0, max_ms=104.0, elapsed_s=30.1, achieved_rate_hz=25.0, throughput_hz=24.9,
                              decisions={"OK": 400, "NG": 350})
    return replace(report, **changes)  # type: ignore[arg-type]


def failed(report: SimulationReport, rate: float = 25.0, deadline_ms: float = 150.0) -> set[str]:
    return {check.name for check in check_line_targets(report, rate, deadline_ms) if not check.met}


def test_line_targets_are_met_by_a_clean_run_and_each_one_can_be_missed() -> None:
    assert failed(good_report()) == set()
    assert failed(good_report(verdicts=749, lost=1)) == {"answered"}
    assert failed(good_report(duplicated=1)) == {"duplicated"}
    assert failed(good_report(p99_ms=P99_TARGET_MS + 0.1)) == {"p99"}
    assert failed(good_report(max_ms=150.5)) == {"deadline"}
    assert failed(good_report(late=20, decisions={"OK": 400, "NG": 330, "FAILSAFE": 20})) == {"verdicts"}
    assert failed(good_report(decisions={"OK": 400, "NG": 340, "FAILSAFE": 10})) == {"verdicts"}
    assert failed(good_report(achieved_rate_hz=21.0)) == {"rate"}
    assert "rate" not in {c.name for c in check_line_targets(good_report(), 0.0, 150.0)}  # as fast as possible


def test_only_modbus_tcp_touches_pymodbus_server_side() -> None:
    pattern = re.compile(r"^\s*(from|import) pymodbus\.(server|simulator|datastore)", re.MULTILINE)
    users = sorted(p.name for p in (ROOT / "firmware_bridge").glob("*.py") if pattern.search(p.read_text()))
    assert users == ["modbus_tcp.py"]
