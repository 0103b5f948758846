"""Benchmark of the triggered line, with the real protocol and the emulated camera, in one run:

1. baseline: the Modbus round trip alone (a trivial judge answers at once), at the target rate;
2. sustained: --rate parts/s for --duration seconds through camera emulator -> model -> SQLite -> Modbus;
3. capacity: as fast as possible with a deep queue and a loose deadline: the sustainable rate;
4. storm: twice the sustainable rate with the recipe's deadline: every trigger must be answered in time.

Prints lost / duplicated / late counts and trigger-to-result p50 / p99 / max as the PLC sees them.
Usage: PYLON_CAMEMU=1 .venv/bin/python bench/bench_line.py [--duration 300] [--rate 25] [--model tile-anomaly]

With --simulator-rounds N it measures only `edge-inspect simulate line` (config/line-demo.yaml, as a
newcomer runs it), alternating N times its simulated PLC in the station's process (--plc-in-process,
how it ran before) and in a process of its own (how it runs now), with the load average of each run:
  .venv/bin/python bench/bench_line.py --simulator-rounds 3 --simulator-parts 750 --rate 25
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("PYLON_CAMEMU", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from firmware_bridge.modbus_server import ModbusServerBridge  # noqa: E402
from firmware_bridge.plc_sim import parity_judge, run_simulation  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "magnetic-tile"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def camera_images(limit: int) -> Path:
    """Real tiles for the emulator: a sample of the dev set when present, else the bundled samples."""
    if not DATASET.is_dir():
        return ROOT / "samples" / "magnetic-tile"
    folder = Path(tempfile.mkdtemp(prefix="bench-line-images-"))
    files = sorted(DATASET.glob("*/*.jpg"))
    step = max(1, len(files) // limit)
    for path in files[::step][:limit]:
        (folder / f"{path.parent.name}_{path.name}").symlink_to(path)
    return folder


def baseline(rate: float, parts: int) -> dict[str, Any]:
    port = free_port()
    bridge = ModbusServerBridge("127.0.0.1", port)
    bridge.start(parity_judge(bridge.publish), lambda _: None)
    time.sleep(0.2)
    try:
        return run_simulation("modbus", f"127.0.0.1:{port}", parts, rate, parts / max(rate, 1) + 30).to_dict()
    finally:
        bridge.stop()


def station_run(model: str, images: Path, rate: float, parts: int, queue_size: int, deadline_ms: float,
                threads: int) -> dict[str, Any]:
    """The station as its own process (as on a line, where the PLC is another device), driven over Modbus."""
    port, api_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="bench-line-") as workdir:
        config_path = Path(workdir) / "station.yaml"
        config_path.write_text(yaml.safe_dump({
            "station": {"id": "bench-line"},
            "storage": {"data_dir": str(Path(workdir) / "data"), "save_images": "ng"},
            "models": {"threads": threads, "vision": model},
            "recipes": [{"number": 1, "name": "bench", "deadline_ms": deadline_ms,
                         "camera": {"exposure_us": 1000, "pixel_format": "Mono8"}}],
            "line": {"camera": {"type": "pylon", "folder": str(images), "grab_timeout_ms": 500},
                     "bridge": {"type": "modbus-server", "port": port}, "queue_size": queue_size},
        }))
        station = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config_path), "--port", str(api_port)],
            cwd=ROOT, env={**os.environ, "PYLON_CAMEMU": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{api_port}/api/v1"
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("the station did not become ready")
            report = run_simulation("modbus", f"127.0.0.1:{port}", parts, rate, parts / max(rate, 1) + 60).to_dict()
            time.sleep(0.5)
            line = httpx.get(f"{api}/line", timeout=10).json()
            report["pipeline"] = line["counters"]
        finally:
            station.send_signal(signal.SIGTERM)
            station.wait(30)
        with sqlite3.connect(Path(workdir) / "data" / "verdicts.db") as conn:
            report["stored_verdicts"] = conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
    return report


def simulate_line(parts: int, rate: float, in_process: bool) -> dict[str, Any]:
    """One `edge-inspect simulate line --json` run, as a user would start it."""
    command = [sys.executable, "-m", "edge.cli", "simulate", "line", "--parts", str(parts), "--rate", str(rate),
               "--json", *(["--plc-in-process"] if in_process else [])]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=parts / max(rate, 1) * 3 + 120,
                          check=False)
    if not done.stdout.strip():
        raise RuntimeError(f"simulate line failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def simulator_comparison(rounds: int, parts: int, rate: float) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {"the station's process": [], "its own process": []}
    print(f"# edge-inspect simulate line, {parts} parts at {rate:g}/s, PLC in the station's process vs its own "
          f"({os.cpu_count()} cores)")
    print(f"{'PLC in':<22} {'load 1m':>7} {'lost':>5} {'dup':>5} {'late':>5} {'fail-safe':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'rate/s':>7} targets")
    for _ in range(rounds):
        for in_process in (True, False):
            report = simulate_line(parts, rate, in_process)
            runs[report["plc"]].append(report)
            print(f"{report['plc']:<22} {report['host']['before']['load_1m']:>7.2f} {report['lost']:>5} "
                  f"{report['duplicated']:>5} {report['late']:>5} {report['decisions'].get('FAILSAFE', 0):>9} "
                  f"{report['p50_ms']:>8.1f} {report['p99_ms']:>8.1f} {report['max_ms']:>8.1f} "
                  f"{report['achieved_rate_hz']:>7.1f} {'met' if report['targets_met'] else 'MISSED'}", flush=True)
    for plc, reports in runs.items():
        p99 = sorted(r["p99_ms"] for r in reports)
        late = sorted(r["decisions"].get("FAILSAFE", 0) for r in reports)
        print(f"median over {len(reports)} runs, PLC in {plc}: p99 {p99[len(p99) // 2]:.1f} ms, "
              f"fail-safe answers {late[len(late) // 2]}")
    return runs


def show(name: str, report: dict[str, Any]) -> None:
    print(f"{name:<34} {report['triggers']:>7} {report['verdicts']:>8} {report['lost']:>5} {report['duplicated']:>5} "
          f"{report['late']:>5} {report['p50_ms']:>8.1f} {report['p99_ms']:>8.1f} {report['max_ms']:>8.1f} "
          f"{report['achieved_rate_hz']:>7.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tile-anomaly")
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of the sustained run")
    parser.add_argument("--deadline-ms", type=float, default=150.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--storm-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--simulator-rounds", type=int, default=0,
                        help="only compare `simulate line` with its PLC in and out of the station's process")
    parser.add_argument("--simulator-parts", type=int, default=750)
    args = parser.parse_args()
    if args.simulator_rounds:
        runs = simulator_comparison(args.simulator_rounds, args.simulator_parts, args.rate)
        if args.json:
            args.json.write_text(json.dumps(runs, indent=2))
        return 0

    images = camera_images(60)
    results: dict[str, Any] = {"model": args.model, "rate": args.rate, "duration_s": args.duration}
    print(f"# edge-inspect line benchmark: {os.cpu_count()} cores, model {args.model}, emulated camera, Modbus TCP")
    print(f"{'run':<34} {'trig':>7} {'results':>8} {'lost':>5} {'dup':>5} {'late':>5} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'rate/s':>7}")
    results["baseline"] = baseline(args.rate, int(args.rate * 20))
    show("baseline: Modbus round trip only", results["baseline"])
    parts = int(args.rate * args.duration)
    results["sustained"] = station_run(args.model, images, args.rate, parts, 8, args.deadline_ms, args.threads)
    show(f"sustained {args.rate:g}/s for {args.duration:g} s", results["sustained"])
    results["capacity"] = station_run(args.model, images, 0, 400, 1000, 30_000, args.threads)
    show("capacity (as fast as possible)", results["capacity"])
    capacity = results["capacity"]["verdicts"] / results["capacity"]["elapsed_s"]
    storm_rate = 2 * capacity
    results["storm"] = station_run(args.model, images, storm_rate, int(storm_rate * args.storm_seconds), 8,
                                   args.deadline_ms, args.threads)
    show(f"storm at 2x capacity ({storm_rate:.0f}/s)", results["storm"])

    sustained, storm = results["sustained"], results["storm"]
    print(f"sustainable rate ~{capacity:.1f} parts/s; end-to-end p50 over the bare Modbus round trip: "
          f"{sustained['p50_ms'] / max(results['baseline']['p50_ms'], 1e-9):.1f}x")
    ok = sustained["lost"] == 0 and sustained["duplicated"] == 0 and sustained["p99_ms"] <= 100
    print(f"target sustained: 0 lost, 0 duplicated, p99 <= 100 ms -> {'MET' if ok else 'MISSED'} "
          f"(lost {sustained['lost']}, dup {sustained['duplicated']}, late {sustained['late']}, "
          f"p99 {sustained['p99_ms']:.1f} ms)")
    in_time = storm["lost"] == 0 and storm["duplicated"] == 0 and storm["max_ms"] <= args.deadline_ms
    print(f"target storm: every trigger answered within the deadline ({args.deadline_ms:g} ms, as the PLC sees it) -> "
          f"{'MET' if in_time else 'MISSED'} (answered {storm['verdicts']}/{storm['triggers']}, "
          f"max {storm['max_ms']:.1f} ms, fail-safe {storm['decisions'].get('FAILSAFE', 0)})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
