"""The simulated PLC as a process of its own, as on a line where the PLC is another device.

`run_plc_process(...)` starts `python -m firmware_bridge.plc_process ...`, which plays the PLC with
`plc_sim.run_simulation` and prints its report as one JSON line; the caller's process (the station)
then shares neither its interpreter lock nor its scheduling with the PLC's scan loop.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import get_args

from .plc_sim import BridgeKind, SimulationReport, run_simulation

STARTUP_ALLOWANCE_S = 30.0  # interpreter start and imports, on top of the simulation's own timeout


class PlcProcessError(RuntimeError):
    """The PLC process failed or printed no report."""


def run_plc_process(bridge_kind: BridgeKind, connection: str, parts: int, rate_hz: float, timeout_s: float,
                    *, lot: str = "LOT-SIM", recipe: int = 1) -> SimulationReport:
    """Play the PLC in a child process and return what it saw (same arguments as run_simulation)."""
    command = [sys.executable, "-m", __name__, "--bridge", bridge_kind, "--connect", connection,
               "--parts", str(parts), "--rate", str(rate_hz), "--timeout", str(timeout_s),
               "--lot", lot, "--recipe", str(recipe)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s + STARTUP_ALLOWANCE_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise PlcProcessError(f"the PLC process did not finish within {timeout_s + STARTUP_ALLOWANCE_S:.0f} s") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise PlcProcessError(f"the PLC process failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return SimulationReport(**json.loads(lines[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.plc_process",
                                     description="A simulated PLC: fire triggers at a running appliance, "
                                                 "print what came back as one JSON line.")
    parser.add_argument("--bridge", choices=get_args(BridgeKind), required=True)
    parser.add_argument("--connect", required=True, help="host:port[/unit] for modbus, a serial port for serial")
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="triggers per second (0: as fast as possible)")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait in all")
    parser.add_argument("--lot", default="LOT-SIM")
    parser.add_argument("--recipe", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        report = run_simulation(args.bridge, args.connect, args.parts, args.rate, args.timeout,
                                lot=args.lot, recipe=args.recipe)
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"simulated PLC: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
