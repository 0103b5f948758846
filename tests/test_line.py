"""The triggered line end to end with real parts: pypylon's camera emulator, the Modbus TCP server
bridge on loopback (and serial over a socat PTY pair), a simulated PLC, SQLite."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from modelkit import dark_part
from support import bearer, free_port, write_station_config

from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station
from firmware_bridge.handshake import ST_READY, ST_STOP_LINE
from firmware_bridge.plc_sim import ModbusPlc, run_simulation
from firmware_bridge.registers import OUTPUT_START, REG_STACK_LIGHT, REG_STATUS

pytest.importorskip("pypylon", reason="the camera extra (pypylon) is not installed")


def part_images(folder: Path, count: int = 4, blank: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.full((120, 160), 128, np.uint8) if blank else dark_part(spot=i % 2 == 1, seed=i)
        cv2.imwrite(str(folder / f"part_{i}.png"), pixels)
    return folder


def line_config(tmp_path: Path, images: Path, port: int, **line: Any) -> Path:
    recipes = line.pop("recipes", None) or [
        # roomy deadlines: these tests check behaviour, not speed (the deadline test sets its own)
        {"number": 1, "name": "standard", "deadline_ms": 5000, "camera": {"exposure_us": 500, "pixel_format": "Mono8"}},
        {"number": 2, "name": "strict", "threshold": 0.99, "deadline_ms": 5000},
    ]
    settings = {"camera": {"type": "pylon", "folder": str(images), "grab_timeout_ms": 500},
                "bridge": {"type": "modbus-server", "port": port}, "default_recipe": 1, **line}
    return write_station_config(tmp_path, line=settings, recipes=recipes)


@pytest.fixture
def line_station(tmp_path: Path) -> Iterator[tuple[Station, str]]:
    port = free_port()
    station = Station(load_config(line_config(tmp_path, part_images(tmp_path / "frames"), port)))
    station.start()
    yield station, f"127.0.0.1:{port}"
    station.stop()


def rows(station: Station) -> list[dict[str, Any]]:
    assert station.store is not None
    return station.store.verdicts_since(0, 10_000)


def settle(station: Station, expected_rows: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(rows(station)) < expected_rows:
        time.sleep(0.05)
    return rows(station)


def test_every_trigger_gets_one_result_and_a_traceable_verdict(line_station: tuple[Station, str]) -> None:
    station, address = line_station
    report = run_simulation("modbus", address, parts=40, rate_hz=20, timeout_s=30, lot="LOT-A", recipe=0)
    assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (40, 40, 0, 0)
    assert report.late == 0 and report.decisions == {"OK": 20, "NG": 20}, \
        "the emulator alternates good parts and parts with a spot"
    stored = settle(station, 40)
    assert len(stored) == 40
    assert sorted(r.serial for r in stored) == [f"SN{i:06d}" for i in range(1, 41)]
    assert {r.lot for r in stored} == {"LOT-A"} and {r.recipe for r in stored} == {"standard"}
    assert len({r.trigger_seq for r in stored}) == 40
    assert all(r.actuated == r.decision and not r.late for r in stored)
    assert all(r.source == "line:cam1" and r.model_name == "bright-spot" for r in stored)


def test_recipe_changes_apply_from_the_next_part(line_station: tuple[Station, str]) -> None:
    station, address = line_station
    run_simulation("modbus", address, parts=4, rate_hz=20, timeout_s=20, recipe=0)
    with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
        operator = bearer(station, "ann", ["operator"])
        assert client.post("/api/v1/line/recipe", json={"number": 2}).status_code == 401
        assert client.post("/api/v1/line/recipe", json={"number": 2}, headers=operator).status_code == 200
        assert client.post("/api/v1/line/recipe", json={"number": 9}, headers=operator).status_code == 404
        assert client.get("/api/v1/line").json()["recipe"] == {"number": 2, "name": "strict"}
    strict = run_simulation("modbus", address, parts=4, rate_hz=20, timeout_s=20, recipe=0)
    assert strict.decisions == {"OK": 4}, "recipe 2's threshold passes every part"
    run_simulation("modbus", address, parts=4, rate_hz=20, timeout_s=20, recipe=1)  # chosen per trigger by the PLC
    stored = settle(station, 12)
    assert [r.recipe for r in stored] == ["standard"] * 4 + ["strict"] * 4 + ["standard"] * 4
    assert any(e.action == "recipe_selected" for e in station.store.audit_log())  # type: ignore[union-attr]


def test_deadline_misses_get_the_failsafe_on_time_and_are_stored_as_late(tmp_path: Path) -> None:
    port = free_port()
    recipes = [{"number": 1, "name": "tight", "deadline_ms": 3}]  # shorter than any capture
    station = Station(load_config(line_config(tmp_path, part_images(tmp_path / "frames"), port, recipes=recipes,
                                              deadline_margin_ms=1)))
    station.start()
    try:
        report = run_simulation("modbus", f"127.0.0.1:{port}", parts=10, rate_hz=10, timeout_s=20)
        assert (report.verdicts, report.lost, report.duplicated, report.late) == (10, 0, 0, 10)
        assert report.decisions == {"FAILSAFE": 10}
        stored = settle(station, 10)
        time.sleep(0.3)  # the late marks follow the verdicts
        stored = rows(station)
        assert len(stored) == 10 and all(r.late and r.actuated == "FAILSAFE" for r in stored)
    finally:
        station.stop()


def test_trigger_storm_is_answered_completely_with_failsafe_for_overload(tmp_path: Path) -> None:
    port = free_port()
    config = line_config(tmp_path, part_images(tmp_path / "frames"), port, queue_size=1)
    station = Station(load_config(config))
    station.start()
    try:
        report = run_simulation("modbus", f"127.0.0.1:{port}", parts=150, rate_hz=0, timeout_s=60)
        assert (report.triggers, report.verdicts, report.lost, report.duplicated) == (150, 150, 0, 0)
        assert report.decisions.get("FAILSAFE", 0) > 0, "a 1-deep queue cannot absorb a storm"
        stored = settle(station, 150)
        assert len(stored) == 150 and len({r.trigger_seq for r in stored}) == 150
        overloaded = [r for r in stored if r.label == "overload"]
        assert overloaded and all(r.decision == "INVALID" and r.actuated == "FAILSAFE" for r in overloaded)
        assert station.line is not None and station.line.counters["overload"] == len(overloaded)
        assert any(a.kind == "trigger_overload" for a in station.store.alarms())  # type: ignore[union-attr]
    finally:
        station.stop()


def test_camera_that_sends_no_frames_gives_invalid_failsafe_and_an_alarm(tmp_path: Path) -> None:
    port = free_port()
    config = line_config(tmp_path, part_images(tmp_path / "frames"), port,
                         camera={"type": "pylon", "folder": str(tmp_path / "frames"), "trigger": "hardware",
                                 "grab_timeout_ms": 50})
    station = Station(load_config(config))
    station.start()
    try:
        report = run_simulation("modbus", f"127.0.0.1:{port}", parts=3, rate_hz=5, timeout_s=20)
        assert report.decisions == {"FAILSAFE": 3} and report.lost == 0
        stored = settle(station, 3)
        assert [r.label for r in stored] == ["camera_timeout"] * 3
        assert all(r.decision == "INVALID" and "no frame" in r.reason for r in stored)
        assert "camera_timeout" in {a.kind for a in station.store.alarms()}  # type: ignore[union-attr]
    finally:
        station.stop()


def test_blank_camera_frames_are_invalid_not_ok(tmp_path: Path) -> None:
    port = free_port()
    station = Station(load_config(line_config(tmp_path, part_images(tmp_path / "blank", blank=True), port)))
    station.start()
    try:
        report = run_simulation("modbus", f"127.0.0.1:{port}", parts=4, rate_hz=10, timeout_s=20)
        assert report.decisions == {"INVALID": 4}
        assert all("blank" in r.reason for r in settle(station, 4))
    finally:
        station.stop()


def test_stop_line_turns_the_stack_light_red_and_sets_the_stop_bit(line_station: tuple[Station, str]) -> None:
    station, address = line_station
    host, port = address.split(":")
    plc = ModbusPlc(host, int(port))
    plc.connect()

    def outputs() -> tuple[int, int]:
        values = plc.read_outputs()
        return values[REG_STATUS - OUTPUT_START], values[REG_STACK_LIGHT - OUTPUT_START]

    def wait_for(check: Any) -> tuple[int, int]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status, light = outputs()
            if check(status, light):
                return status, light
            time.sleep(0.05)
        active = station.store.alarms(active_only=True) if station.store else []
        raise AssertionError(f"status/light {outputs()}, active alarms {active}")

    try:
        wait_for(lambda status, light: status & ST_READY and light == 1)  # ready, green
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            refused = client.post("/api/v1/line/stop", json={"reason": "anyone on the network"})
            assert refused.status_code == 401
            operator = bearer(station, "shift-lead", ["operator"])
            client.post("/api/v1/line/stop", json={"reason": "jam at the gate"}, headers=operator)
            status, _ = wait_for(lambda status, light: status & ST_STOP_LINE and light == 3)
            assert not status & ST_READY
            client.post("/api/v1/line/resume", json={}, headers=operator)
            alarm = next(a for a in client.get("/api/v1/alarms").json() if a["kind"] == "line_stopped")
            assert alarm["cleared_at"] is not None, "releasing the stop clears its alarm"
            trail = client.get("/api/v1/audit").json()["items"]
            stops = [(e["action"], e["actor"]) for e in trail if e["entity"] == "line"]
            assert stops == [("line_stopped", "token:shift-lead"), ("line_resumed", "token:shift-lead")]
            wait_for(lambda status, light: not status & ST_STOP_LINE and light == 1)
    finally:
        plc.close()


def test_serial_link_over_a_pty_pair(tmp_path: Path) -> None:
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (scripts/install-system-deps.sh installs it)")
    from firmware_bridge.pty_pair import PtyPair

    pair = PtyPair()
    appliance_end, plc_end = pair.start()
    try:
        config = line_config(tmp_path, part_images(tmp_path / "frames"), 0,
                             bridge={"type": "serial", "serial_port": appliance_end})
        station = Station(load_config(config))
        station.start()
        try:
            report = run_simulation("serial", plc_end, parts=20, rate_hz=20, timeout_s=30, lot="LOT-S")
            assert (report.verdicts, report.lost, report.duplicated, report.late) == (20, 0, 0, 0)
            stored = settle(station, 20)
            assert {r.lot for r in stored} == {"LOT-S"} and len(stored) == 20
        finally:
            station.stop()
    finally:
        pair.stop()


def test_simulate_line_command_prints_the_report(tmp_path: Path) -> None:
    from test_service_live import run_cli

    config = line_config(tmp_path, part_images(tmp_path / "frames"), free_port())
    result = run_cli("simulate", "line", "--parts", "20", "--rate", "20", "--bridge", "modbus", "--json",
                     "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("triggers", "verdicts", "lost", "duplicated", "late", "p50_ms", "p99_ms"):
        assert key in report
    assert (report["triggers"], report["verdicts"], report["lost"], report["duplicated"]) == (20, 20, 0, 0)
    assert report["stored_verdicts"] == 20
    assert report["plc"] == "its own process" and report["deadline_ms"] == 5000
    assert {t["name"] for t in report["targets"]} == {"answered", "duplicated", "p99", "deadline", "verdicts", "rate"}
    assert report["targets_met"] == all(t["met"] for t in report["targets"])
    assert {"answered", "duplicated"} <= {t["name"] for t in report["targets"] if t["met"]}
    conn = sqlite3.connect(tmp_path / "data" / "verdicts.db")
    assert conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 20


def without_emulator_variable() -> dict[str, str]:
    """The environment of a new user's shell: PYLON_CAMEMU unset (tests/support.py sets it for the others)."""
    return {k: v for k, v in os.environ.items() if k != "PYLON_CAMEMU"}


def test_demo_line_config_runs_as_printed_without_the_emulator_variable(tmp_path: Path) -> None:
    """The commands in config/line-demo.yaml's header, run as printed from a copy of the project folder's
    layout (only the ports, so as not to collide, and the part counts, to keep it short, are changed)."""
    from support import EDGE_INSPECT, PROJECT_ROOT

    demo = PROJECT_ROOT / "config" / "line-demo.yaml"
    text = demo.read_text()
    commands = [line[1:].strip() for line in text.splitlines() if line.startswith("#   edge-inspect ")]
    assert len(commands) == 3, commands
    bridge_port, api_port = free_port(), free_port()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "line-demo.yaml").write_text(
        text.replace("port: 5020", f"port: {bridge_port}").replace("port: 8080", f"port: {api_port}"))
    (tmp_path / "samples").symlink_to(PROJECT_ROOT / "samples")

    def argv(command: str) -> list[str]:
        command = command.replace("127.0.0.1:5020", f"127.0.0.1:{bridge_port}")
        command = re.sub(r"--parts \d+", "--parts 30", command)
        return [*EDGE_INSPECT, *command.split()[1:]]

    env = without_emulator_variable()
    assert commands[0] == "edge-inspect run --config config/line-demo.yaml"
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen(argv(commands[0]), cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert service.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        plc = subprocess.run(argv(commands[1]), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert plc.returncode == 0, plc.stderr
        report = json.loads(plc.stdout.strip().splitlines()[-1])
        assert (report["triggers"], report["verdicts"], report["lost"], report["duplicated"]) == (30, 30, 0, 0)
        # judged from the emulator's frames (fail-safe answers are possible on a busy host: speed is not tested)
        assert {"OK", "NG"} & set(report["decisions"]), report
        line = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/line", timeout=5).json()
        assert line["camera_connected"] and line["counters"]["camera_errors"] == 0, line
        alarms = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/alarms", timeout=5).json()
        assert not [a for a in alarms if a["kind"].startswith("camera")], alarms
    finally:
        service.terminate()
        service.wait(timeout=30)
    assert "camera cam1 open: 0815-" in log.read_text()  # pypylon's emulated camera, asked for by the file

    both = subprocess.run(argv(commands[2]), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert both.returncode == 0, both.stderr
    out = both.stdout
    assert "PLC in its own process" in out and "answered 30, lost 0, duplicated 0" in out, out
    decisions = re.search(r"decisions (\{.*?\})", out)
    assert decisions is not None and {"OK", "NG"} & set(json.loads(decisions.group(1))), out
    assert "line targets:" in out and len(re.findall(r"^  (met   |MISSED)  ", out, re.MULTILINE)) == 6, out
    assert out.rstrip().endswith(("all line targets met", "line targets MISSED")), out


def test_a_real_camera_that_is_missing_is_still_a_critical_alarm(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLON_CAMEMU")  # read by pypylon at each enumeration: no emulated camera now
    config = line_config(tmp_path, part_images(tmp_path / "frames"), free_port())
    station = Station(load_config(config))
    station.start()
    try:
        assert station.store is not None and station.line is not None
        alarms = station.store.alarms(active_only=True)
        assert [(a.kind, a.severity) for a in alarms] == [("camera_unavailable", "critical")]
        assert "no Basler camera found" in alarms[0].message
        assert not station.line.camera.connected
    finally:
        station.stop()
    monkeypatch.setenv("PYLON_CAMEMU", "1")  # the camera is back: the next start clears the old alarm
    station = Station(load_config(config))
    station.start()
    try:
        assert station.store is not None and station.line is not None and station.line.camera.connected
        deadline = time.monotonic() + 5
        while station.store.alarms(active_only=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert station.store.alarms(active_only=True) == []
        assert "alarm_cleared" in [e.action for e in station.store.audit_log(20)]
    finally:
        station.stop()
