"""Benchmark of the line bridge: trigger -> result latency and the highest sustainable trigger rate.

The appliance side (bridge + a trivial parity judge) runs in a process of its own; the simulated PLC
(firmware_bridge.plc_sim) fires triggers over the real protocol and measures each trigger-to-result
latency from its side. Modbus TCP on loopback, and serial over a socat PTY pair (115200 baud set;
a PTY passes bytes at memory speed, so this measures the protocol stack, not the wire).

    .venv/bin/python bench/bench_bridge.py                  # writes bench/RESULTS-bridge.md
    .venv/bin/python bench/bench_bridge.py --seconds 2 --sustain-s 5 --out /tmp/r.md

A rate counts as sustainable when every trigger got exactly one result, the PLC kept within 5 % of
the rate, and p99 stayed at or under --p99-limit-ms (100 ms, the issue's target).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import socket
import sys
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from firmware_bridge.plc_sim import SimulationReport, parity_judge, run_simulation
from firmware_bridge.pty_pair import PtyPair

RATES_HZ = [25, 50, 100, 200, 400, 800, 1600]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(kind: str, connection: str, ready: EventType, stop: EventType) -> None:
    """Appliance process: the bridge and a judge that answers at once (even OK, odd NG)."""
    bridge: Any
    if kind == "modbus":
        from firmware_bridge.modbus_server import ModbusServerBridge

        host, _, port = connection.rpartition(":")
        bridge = ModbusServerBridge(host, int(port), unit_id=1)
    else:
        from firmware_bridge.serial_bridge import SerialBridge

        bridge = SerialBridge(connection, 115200)
    bridge.start(parity_judge(bridge.publish), lambda _recipe: None)
    ready.set()
    stop.wait()
    bridge.stop()


def measure(kind: str, plc_connection: str, rate_hz: float, parts: int) -> SimulationReport:
    timeout_s = max(30.0, 3 * parts / max(rate_hz, 1))
    return run_simulation(kind, plc_connection, parts=parts, rate_hz=rate_hz, timeout_s=timeout_s)  # type: ignore[arg-type]


def bench_transport(kind: str, args: argparse.Namespace) -> list[tuple[str, SimulationReport, bool]]:
    pair = PtyPair() if kind == "serial" else None
    if pair is not None:
        appliance_end, plc_end = pair.start()
    else:
        port = free_port()
        appliance_end = plc_end = f"127.0.0.1:{port}"
    context = mp.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    process = context.Process(target=serve, args=(kind, appliance_end, ready, stop), daemon=True)
    process.start()
    rows: list[tuple[str, SimulationReport, bool]] = []
    try:
        if not ready.wait(30):
            raise RuntimeError(f"{kind} bridge did not start")
        measure(kind, plc_end, 100, 50)  # warm-up
        sustained = measure(kind, plc_end, 25, int(25 * args.sustain_s))
        rows.append((f"25/s for {args.sustain_s:g} s", sustained, ok(sustained, 25, args)))
        for rate in RATES_HZ:
            report = measure(kind, plc_end, rate, max(50, int(rate * args.seconds)))
            passed = ok(report, rate, args)
            rows.append((f"{rate}/s for {args.seconds:g} s", report, passed))
            print(kind, rate, report.to_dict(), "OK" if passed else "not sustained", flush=True)
            if not passed:
                break
        storm = measure(kind, plc_end, 0, args.storm)
        rows.append((f"storm: {args.storm} as fast as possible", storm, storm.lost == 0 and storm.duplicated == 0))
    finally:
        stop.set()
        process.join(10)
        if pair is not None:
            pair.stop()
    return rows


def ok(report: SimulationReport, rate_hz: float, args: argparse.Namespace) -> bool:
    return (
        report.lost == 0
        and report.duplicated == 0
        and report.verdicts == report.triggers
        and report.achieved_rate_hz >= 0.95 * rate_hz
        and report.throughput_hz >= 0.95 * rate_hz
        and report.p99_ms <= args.p99_limit_ms
    )


def write_results(path: Path, results: dict[str, list[tuple[str, SimulationReport, bool]]], command: str) -> None:
    lines = [
        "# Line bridge benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU(s) (shared with other jobs; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end), Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "Appliance side (bridge + instant parity judge) in its own process; the simulated PLC measures",
        "trigger -> result latency from its side. Modbus: the PLC scans every 2 ms (write trigger, read",
        "results, ack), so latencies include up to one scan, and the PLC fires at most one trigger per scan",
        "(three Modbus transactions), which is what limits the highest rate. Serial: socat PTY pair, stop-and-wait",
        "link; a PTY moves bytes at memory speed, so the wire time of a real 115200-baud line (about 3 ms per part",
        "for a TRIGGER with short texts plus the ACKs, i.e. a ceiling near 300 parts/s) is not included.",
        "For serial, 'fired /s' is the rate the PLC handed triggers to its link queue; in the storm they queue",
        "on the PLC's side, which is where the storm's latency comes from. The machine is shared with",
        "training jobs, so single slow scheduling slices show up in p99 and max.",
        "",
    ]
    for kind, rows in results.items():
        best = max(
            (int(label.split("/")[0]) for label, _, passed in rows if passed and "storm" not in label), default=0
        )
        lines += [
            f"## {kind}",
            "",
            f"Highest sustainable rate tried: **{best}/s** (rates tried: {', '.join(map(str, RATES_HZ))}).",
            "",
            "| run | triggers | results | lost | dup | p50 ms | p99 ms | max ms | fired /s | answered /s | sustained |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for label, report, passed in rows:
            lines.append(
                f"| {label} | {report.triggers} | {report.verdicts} | {report.lost} | {report.duplicated} | "
                f"{report.p50_ms:.2f} | {report.p99_ms:.2f} | {report.max_ms:.2f} | "
                f"{report.achieved_rate_hz:.0f} | {report.throughput_hz:.0f} | "
                f"{'yes' if passed else 'no'} |"
            )
        lines.append("")
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each rate step")
    parser.add_argument("--sustain-s", type=float, default=20.0, help="duration of the 25/s run")
    parser.add_argument("--storm", type=int, default=1000, help="triggers fired as fast as possible")
    parser.add_argument("--p99-limit-ms", type=float, default=100.0)
    parser.add_argument("--transports", default="modbus,serial")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-bridge.md"))
    args = parser.parse_args()
    results: dict[str, list[tuple[str, SimulationReport, bool]]] = {}
    for kind in args.transports.split(","):
        if kind == "serial" and shutil.which("socat") is None:
            print("socat missing: serial skipped", file=sys.stderr)
            continue
        results[kind] = bench_transport(kind, args)
    command = "python bench/bench_bridge.py " + " ".join(sys.argv[1:])
    write_results(args.out, results, command.strip())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
