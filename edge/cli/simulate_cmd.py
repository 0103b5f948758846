"""``edge-inspect simulate line``: drive triggers over the real protocol against a running pipeline.

The station runs in this process; the simulated PLC runs in a process of its own (as on a line, where
it is another device), so the report shows the station as it performs. The report ends with the line
targets (firmware_bridge.line_targets) and whether the run met them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.cli.common import CommandError, config_from
from edge.config import PROJECT_ROOT, BridgeSettings, StationConfig
from edge.station import StartupError, Station
from firmware_bridge.line_targets import TargetCheck, check_line_targets

if TYPE_CHECKING:  # plc_sim imports pymodbus and pyserial (the 'plc' extra): loaded when a line is simulated
    from firmware_bridge.plc_sim import BridgeKind, SimulationReport

LINE_DEMO_CONFIG = PROJECT_ROOT / "config" / "line-demo.yaml"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("simulate", help="simulators for demos, tests and benchmarks")
    actions = parser.add_subparsers(dest="action", required=True, metavar="WHAT")
    line = actions.add_parser(
        "line", help="a simulated PLC firing triggers at a pipeline with the emulated camera",
        description="Starts the station of --config (default: config/line-demo.yaml) in this process with its "
                    "camera (the pypylon emulator for type pylon) and a bridge of the chosen kind on loopback "
                    "(Modbus TCP) or a socat PTY pair (serial); a simulated PLC in a process of its own fires "
                    "--parts triggers at --rate per second and reads every result back. Prints the report and "
                    "the line targets with whether they were met. With --connect it only plays the PLC against "
                    "a station that is already running. Exit status: 1 if a trigger was lost or answered "
                    "twice (or, with --require-targets, a target was missed), 0 otherwise.")
    line.add_argument("--parts", type=int, default=100)
    line.add_argument("--rate", type=float, default=10.0, help="triggers per second (0: as fast as possible)")
    line.add_argument("--bridge", choices=["modbus", "serial"], default="modbus")
    line.add_argument("--json", action="store_true", help="print only the JSON report")
    line.add_argument("--config", type=Path, default=None, metavar="FILE")
    line.add_argument("--connect", default=None, metavar="ADDRESS",
                      help="a running station: host:port[/unit] for modbus, a serial port for serial")
    line.add_argument("--data-dir", type=Path, default=None, help="keep the run's verdicts here (default: temporary)")
    line.add_argument("--timeout", type=float, default=None, help="seconds to wait in all (default: generous)")
    line.add_argument("--recipe", type=int, default=None, help="recipe number sent with each trigger")
    line.add_argument("--require-targets", action="store_true", help="exit 1 when a line target is missed")
    line.add_argument("--plc-in-process", action="store_true",
                      help="run the simulated PLC in the station's process (for comparison only: the two then "
                           "share one interpreter lock, which slows the station down)")
    line.set_defaults(handler=run_line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _simulated_station(args: argparse.Namespace, config: StationConfig, appliance_port: str | None,
                       data_dir: Path) -> tuple[Station, str]:
    """The config's station with its bridge moved to a free loopback port or the PTY's appliance end."""
    assert config.line is not None
    if args.bridge == "modbus":
        port = _free_port()
        bridge = BridgeSettings(type="modbus-server", host="127.0.0.1", port=port, unit_id=config.line.bridge.unit_id)
        connection = f"127.0.0.1:{port}/{bridge.unit_id}"
    else:
        assert appliance_port is not None
        bridge = BridgeSettings(type="serial", serial_port=appliance_port, baudrate=config.line.bridge.baudrate)
        connection = ""
    line = config.line.model_copy(update={"bridge": bridge})
    storage = config.storage.model_copy(update={"data_dir": data_dir})
    station = Station(config.model_copy(update={"line": line, "sources": [], "storage": storage}))
    return station, connection


def _play_plc(args: argparse.Namespace, connection: str, timeout: float) -> SimulationReport:
    kind: BridgeKind = args.bridge
    recipe = args.recipe or 0
    if args.plc_in_process:
        from firmware_bridge.plc_sim import run_simulation

        return run_simulation(kind, connection, args.parts, args.rate, timeout, recipe=recipe)
    from firmware_bridge.plc_process import PlcProcessError, run_plc_process

    try:
        return run_plc_process(kind, connection, args.parts, args.rate, timeout, recipe=recipe)
    except PlcProcessError as exc:
        raise CommandError(str(exc), exit_code=1) from exc


def _load() -> dict[str, float]:
    one, five, _ = os.getloadavg()
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "cpus": float(os.cpu_count() or 0)}


def run_line(args: argparse.Namespace) -> int:
    from firmware_bridge.pty_pair import PtyPair, SocatMissing

    timeout = args.timeout or max(30.0, args.parts / max(args.rate, 1.0) * 2 + 20)
    if args.connect:
        report = _play_plc(args, args.connect, timeout)
        print(json.dumps(report.to_dict()))
        return 0 if report.lost == 0 and report.duplicated == 0 else 1

    if args.config is None:
        args.config = LINE_DEMO_CONFIG
    config = config_from(args)
    if config.line is None:
        raise CommandError(f"{args.config} has no 'line' section to simulate")
    recipe = config.recipe(args.recipe or config.line.default_recipe)
    if recipe is None:
        raise CommandError(f"{args.config} has no recipe {args.recipe}")
    os.environ.setdefault("PYLON_CAMEMU", "1")  # before pypylon enumerates devices
    pty = PtyPair() if args.bridge == "serial" else None
    temporary = tempfile.TemporaryDirectory(prefix="edge-sim-") if args.data_dir is None else None
    data_dir = args.data_dir or Path(temporary.name)  # type: ignore[union-attr]
    station: Station | None = None
    try:
        appliance_end = plc_end = None
        if pty is not None:
            try:
                appliance_end, plc_end = pty.start()
            except SocatMissing as exc:
                raise CommandError(str(exc)) from exc
        station, connection = _simulated_station(args, config, appliance_end, data_dir)
        try:
            station.start()
        except StartupError as exc:
            raise CommandError(f"cannot start the simulated station: {exc}") from exc
        time.sleep(0.3)  # let the bridge and camera settle
        assert station.store is not None and station.line is not None
        before = station.store.counts()
        load_before = _load()
        report = _play_plc(args, plc_end or connection, timeout)
        result: dict[str, Any] = report.to_dict()
        time.sleep(0.2)  # late verdicts and their marks reach the store
        counts = station.store.counts()
        checks = check_line_targets(report, args.rate, recipe.deadline_ms)
        result.update({"stored_verdicts": counts["verdicts"] - before["verdicts"],
                       "stored_parts": counts["parts"] - before["parts"],
                       "pipeline": station.line.status()["counters"], "config": str(args.config),
                       "plc": "the station's process" if args.plc_in_process else "its own process",
                       "rate_hz": args.rate, "deadline_ms": recipe.deadline_ms,
                       "host": {"before": load_before, "after": _load()},
                       "targets": [check.to_dict() for check in checks],
                       "targets_met": all(check.met for check in checks)})
    finally:
        if station is not None:
            station.stop()
        if pty is not None:
            pty.stop()
        if temporary is not None:
            temporary.cleanup()
    print(json.dumps(result) if args.json else _summary(result, checks))
    sys.stdout.flush()
    if result["lost"] or result["duplicated"]:
        return 1
    return 1 if args.require_targets and not result["targets_met"] else 0


def _summary(result: dict[str, Any], checks: list[TargetCheck]) -> str:
    """The report for a person: what the PLC saw, then each target with met / MISSED."""
    host = result["host"]["after"]
    lines = [
        f"simulated line: {result['triggers']} parts at {result['rate_hz']:g}/s over {result['bridge']}, "
        f"PLC in {result['plc']}, config {result['config']}",
        f"  answered {result['verdicts']}, lost {result['lost']}, duplicated {result['duplicated']}, "
        f"late {result['late']}; trigger to result p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms; fired at {result['achieved_rate_hz']:g}/s; "
        f"decisions {json.dumps(result['decisions'], sort_keys=True)}; stored {result['stored_verdicts']} verdicts",
        f"  host: {host['cpus']:g} CPUs, load average {host['load_1m']:g} (1 min), {host['load_5m']:g} (5 min) "
        "- figures from a busy host mean little",
        "line targets:",
    ]
    width = max(len(check.target) for check in checks)
    lines += [f"  {'met   ' if check.met else 'MISSED'}  {check.target:<{width}}  {check.value}" for check in checks]
    lines.append("all line targets met" if result["targets_met"] else "line targets MISSED")
    return "\n".join(lines)
