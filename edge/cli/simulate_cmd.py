"""``edge-inspect simulate line``: drive triggers over the real protocol against a running pipeline."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.cli.common import CommandError, config_from
from edge.config import PROJECT_ROOT, BridgeSettings, StationConfig
from edge.station import StartupError, Station

LINE_DEMO_CONFIG = PROJECT_ROOT / "config" / "line-demo.yaml"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("simulate", help="simulators for demos, tests and benchmarks")
    actions = parser.add_subparsers(dest="action", required=True, metavar="WHAT")
    line = actions.add_parser(
        "line", help="a simulated PLC firing triggers at a pipeline with the emulated camera",
        description="Starts the station of --config (default: config/line-demo.yaml) in this process with its "
                    "camera (the pypylon emulator for type pylon) and a bridge of the chosen kind on loopback "
                    "(Modbus TCP) or a socat PTY pair (serial), then fires --parts triggers at --rate per second, "
                    "reads every result back and prints one JSON object. With --connect it only plays the PLC "
                    "against a station that is already running.")
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


def run_line(args: argparse.Namespace) -> int:
    from firmware_bridge.plc_sim import run_simulation
    from firmware_bridge.pty_pair import PtyPair, SocatMissing

    timeout = args.timeout or max(30.0, args.parts / max(args.rate, 1.0) * 2 + 20)
    if args.connect:
        report = run_simulation(args.bridge, args.connect, args.parts, args.rate, timeout,
                                recipe=args.recipe or 0)
        print(json.dumps(report.to_dict()))
        return 0 if report.lost == 0 and report.duplicated == 0 else 1

    if args.config is None:
        args.config = LINE_DEMO_CONFIG
    config = config_from(args)
    if config.line is None:
        raise CommandError(f"{args.config} has no 'line' section to simulate")
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
        assert station.store is not None
        before = station.store.counts()
        report = run_simulation(args.bridge, plc_end or connection, args.parts, args.rate, timeout,
                                recipe=args.recipe or 0)
        result: dict[str, Any] = report.to_dict()
        assert station.line is not None and station.store is not None
        time.sleep(0.2)  # late verdicts and their marks reach the store
        line_status = station.line.status()
        counts = station.store.counts()
        result.update({"stored_verdicts": counts["verdicts"] - before["verdicts"],
                       "stored_parts": counts["parts"] - before["parts"],
                       "pipeline": line_status["counters"], "config": str(args.config)})
    finally:
        if station is not None:
            station.stop()
        if pty is not None:
            pty.stop()
        if temporary is not None:
            temporary.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    sys.stdout.flush()
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1
