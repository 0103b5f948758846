"""A fleet on loopback: N station processes record verdicts (through VerdictStore.record, without judging images:
2 cores cannot judge 500 parts/s) at a steady rate, each with its upstream publisher running; one Mosquitto; the
collector (`edge-inspect collect`) writing into a central SQLite. The broker is stopped for part of the run.
Reports whether every verdict arrived, none twice after de-duplication, and how fast the backlog drained once
the broker returned.

Usage: .venv/bin/python bench/bench_fleet.py [--stations 20] [--minutes 10] [--rate 25] [--outage-s 120]
       [--outage-at-s S] [--json bench/results/fleet.json]
       .venv/bin/python bench/bench_fleet.py --store-overhead 20000   # the outbox's cost to one store's writes
(the issue's run is the default: 20 stations x 10 min at 25 verdicts/s each, broker down for 2 min)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from edge.config import UpstreamSettings  # noqa: E402
from edge.store import NewVerdict, PartContext, StoredVerdict, VerdictStore  # noqa: E402
from edge.upstream import Upstream  # noqa: E402

PYTHON = sys.executable


# -- one station ------------------------------------------------------------------------------------
def run_station(station_id: str, folder: Path, mqtt_url: str, rate: float, seconds: float, drain_s: float) -> None:
    """Record ``rate`` verdicts/s for ``seconds``, then wait (at most ``drain_s``) until the outbox is empty."""
    folder.mkdir(parents=True, exist_ok=True)
    store = VerdictStore(folder / "verdicts.db")
    # the field's defaults, except a 5 s longest retry delay, so the drain is measured from the broker's return
    upstream = Upstream(UpstreamSettings(mqtt_url=mqtt_url, retry_max_s=5.0), station_id)
    upstream.attach(store)
    store.start()
    upstream.start()
    progress = folder / "progress.json"
    pending: collections.deque[Future[StoredVerdict]] = collections.deque()
    recorded = 0
    started = time.monotonic()
    next_report = started
    n = 0
    while True:
        due = started + n / rate
        now = time.monotonic()
        if due - started >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        n += 1
        part = PartContext(station=station_id, source="bench", serial=f"{station_id}-{n:07d}", lot="LOT-FLEET")
        decision = "NG" if n % 50 == 0 else "OK"
        verdict = NewVerdict("vision", decision, "anomaly" if decision == "NG" else "good", 0.3, 0.5,
                             "bench-model", 1, 4.0)
        pending.append(store.record(part, [verdict]))
        while pending and pending[0].done():
            pending.popleft().result()
            recorded += 1
        if time.monotonic() >= next_report:
            _write(progress, {"recorded": recorded, "done": False})
            next_report += 1.0
    while pending:
        pending.popleft().result(30)
        recorded += 1
    _write(progress, {"recorded": recorded, "done": False})
    worker = upstream.workers[0]
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline and worker.outbox.depth(worker.counters.delivered_id) > 0:
        time.sleep(0.2)
    left = worker.outbox.depth(worker.counters.delivered_id)
    upstream.stop()
    store.close()
    _write(progress, {"recorded": recorded, "done": True, "outbox_left": left, **worker.counters.as_dict()})


def _write(path: Path, values: dict[str, Any]) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(values), encoding="utf-8")
    os.replace(temp, path)


# -- the fleet ---------------------------------------------------------------------------------------
def collected(db: Path) -> int:
    """Verdicts in the central database (rowid grows by one per insert: no scan of a growing table)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM verdicts").fetchone()[0])
    except sqlite3.Error:
        return 0


def recorded(folders: list[Path]) -> tuple[int, list[dict[str, Any]]]:
    states = []
    for folder in folders:
        try:
            states.append(json.loads((folder / "progress.json").read_text()))
        except (OSError, ValueError):
            states.append({"recorded": 0, "done": False})
    return sum(s["recorded"] for s in states), states


def run_fleet(args: argparse.Namespace) -> dict[str, Any]:
    from test_upstream_broker import Mosquitto  # the tests' broker runner: own config file, free port, by pid

    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    seconds = args.minutes * 60.0
    outage_at = args.outage_at_s if args.outage_at_s is not None else seconds / 3
    broker = Mosquitto(work / "broker").start()
    fleet_db = work / "fleet.db"
    collector_log = (work / "collector.log").open("wb")
    collector = subprocess.Popen([PYTHON, "-m", "edge.cli", "collect", "--mqtt-url", broker.url, "--db", str(fleet_db),
                                  "--stats-interval", "0"], stdout=collector_log, stderr=subprocess.STDOUT, cwd=ROOT)
    # MQTT drops what is published before anyone subscribed: the collector's session must exist first
    deadline = time.monotonic() + 60
    while "subscribed to" not in (work / "collector.log").read_text(errors="replace"):
        if time.monotonic() > deadline or collector.poll() is not None:
            raise SystemExit(f"the collector did not subscribe: {(work / 'collector.log').read_text()}")
        time.sleep(0.2)
    folders = [work / f"st-{i:02d}" for i in range(args.stations)]
    stations = [subprocess.Popen([PYTHON, __file__, "--station", f"st-{i:02d}", "--folder", str(folder),
                                  "--mqtt-url", broker.url, "--rate", str(args.rate), "--seconds", str(seconds),
                                  "--drain-s", str(args.drain_s)], cwd=ROOT)
                for i, folder in enumerate(folders)]
    t0 = time.monotonic()
    timeline: list[tuple[float, int, int]] = []  # (t, recorded, collected)
    stopped_at = restarted_at = caught_up_at = None
    collected_at_restart = 0
    backlog_at_restart = 0
    while any(p.poll() is None for p in stations):
        t = time.monotonic() - t0
        total, _ = recorded(folders)
        got = collected(fleet_db)
        timeline.append((round(t, 2), total, got))
        if stopped_at is None and t >= outage_at:
            broker.stop(signal.SIGKILL if args.crash else signal.SIGTERM)
            stopped_at = t
            print(f"[{t:6.1f} s] broker {'killed' if args.crash else 'stopped'} ({total} recorded, {got} collected)",
                  flush=True)
        elif stopped_at is not None and restarted_at is None and t >= stopped_at + args.outage_s:
            broker.start()
            restarted_at = t
            collected_at_restart = got
            backlog_at_restart = total - got
            print(f"[{t:6.1f} s] broker restarted: backlog {backlog_at_restart}", flush=True)
        elif restarted_at is not None and caught_up_at is None and total - got <= args.stations * args.rate:
            caught_up_at = t
            print(f"[{t:6.1f} s] backlog drained", flush=True)
        elif int(t) % 30 == 0:
            print(f"[{t:6.1f} s] recorded {total}, collected {got}", flush=True)
        time.sleep(1.0)
    total, states = recorded(folders)
    deadline = time.monotonic() + 120  # a crash's losses come back at the collector's next repair round (30 s)
    while collected(fleet_db) < total and time.monotonic() < deadline:
        time.sleep(0.5)
    collector.send_signal(signal.SIGTERM)
    collector.wait(30)
    collector_log.close()
    broker.stop()
    stats = _last_json_line(work / "collector.log")
    with sqlite3.connect(fleet_db) as conn:
        rows = conn.execute("SELECT station, COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM verdicts"
                            " GROUP BY station").fetchall()
        messages = conn.execute("SELECT COUNT(*) FROM messages WHERE kind = 'verdicts'").fetchone()[0]
    per_station = {r[0]: {"rows": r[1], "distinct_ids": r[2], "min_id": r[3], "max_id": r[4]} for r in rows}
    missing = {s["station"]: s["recorded"] - per_station.get(s["station"], {}).get("rows", 0)
               for s in ({**st, "station": f"st-{i:02d}"} for i, st in enumerate(states))}
    drained = (caught_up_at - restarted_at) if caught_up_at is not None and restarted_at is not None else None
    drain_rate = first_delivery = None
    if drained:
        got_then = next(c for t, _, c in timeline if t >= caught_up_at)
        # from the first record the collector got after the restart (the stations' retry back-off excluded)
        first_delivery = next((t for t, _, c in timeline if restarted_at is not None and t > restarted_at
                               and c > collected_at_restart), restarted_at)
        drain_rate = (got_then - collected_at_restart) / max(caught_up_at - first_delivery, 1.0)
    result = {
        "command": " ".join([Path(PYTHON).name, "bench/bench_fleet.py", *sys.argv[1:]]),
        "stations": args.stations, "minutes": args.minutes, "rate_per_station": args.rate,
        "broker": "killed (SIGKILL)" if args.crash else "stopped (SIGTERM)",
        "replays_requested": stats.get("replays_requested"),
        "outage_s": args.outage_s, "outage_at_s": outage_at,
        "recorded": total, "collected_verdicts": sum(v["rows"] for v in per_station.values()),
        "verdict_messages": messages,
        "every_verdict_arrived": all(v == 0 for v in missing.values()),
        "missing_per_station": {k: v for k, v in missing.items() if v},
        "none_twice": all(v["rows"] == v["distinct_ids"] == v["max_id"] - v["min_id"] + 1
                          for v in per_station.values()),
        "duplicates_dropped_by_collector": stats.get("duplicates"),
        "backlog_at_restart": backlog_at_restart, "drain_seconds_from_restart": drained,
        "first_delivery_after_restart_s": None if first_delivery is None or restarted_at is None
        else round(first_delivery - restarted_at, 1),
        "drain_rate_records_per_s": None if drain_rate is None else round(drain_rate),
        "outbox_left": {f"st-{i:02d}": s.get("outbox_left") for i, s in enumerate(states) if s.get("outbox_left")},
        "failed_rounds": sum(s.get("failed", 0) for s in states),
        "connect_failures": sum(s.get("connect_failures", 0) for s in states),
        "work_dir": str(work),
    }
    return result


def store_overhead(parts: int, threads: int = 4) -> dict[str, Any]:
    """What the outbox costs inspection: one store's write throughput and per-part commit latency without the
    upstream link, and with it while the broker is unreachable (every record's messages stay in the outbox)."""
    import statistics
    import threading

    from test_upstream_broker import free_port

    result: dict[str, Any] = {"parts": parts, "writer_threads": threads}
    for label, url in (("no upstream", None), ("outbox, broker down", f"mqtt://127.0.0.1:{free_port()}")):
        folder = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
        store = VerdictStore(folder / "verdicts.db")
        upstream = Upstream(UpstreamSettings(mqtt_url=url), "st-bench")
        upstream.attach(store)
        store.start()
        upstream.start()
        latencies: list[float] = []
        each = parts // threads
        workers = [threading.Thread(target=_write_parts, args=(store, latencies, i * each, each))
                   for i in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        outbox = int(store.reader().execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        upstream.stop()
        store.close()
        latencies.sort()
        result[label] = {"parts_per_s": round(each * threads / elapsed),
                         "p50_ms": round(statistics.median(latencies), 2),
                         "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2), "outbox_rows": outbox}
    return result


def _write_parts(store: VerdictStore, latencies: list[float], offset: int, count: int) -> None:
    for n in range(count):
        part = PartContext(station="st-bench", source="bench", serial=f"SN-{offset + n:08d}", lot="LOT-1")
        verdict = NewVerdict("vision", "OK", "good", 0.3, 0.5, "bench-model", 1, 4.0)
        started = time.perf_counter()
        store.record(part, [verdict]).result()
        latencies.append((time.perf_counter() - started) * 1000.0)


def _last_json_line(path: Path) -> dict[str, Any]:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=25.0, help="verdicts per second per station")
    parser.add_argument("--outage-s", type=float, default=120.0, help="seconds the broker is down")
    parser.add_argument("--outage-at-s", type=float, default=None, help="when it stops (default: a third in)")
    parser.add_argument("--crash", action="store_true",
                        help="SIGKILL the broker (a crash: it loses its unsaved queues, and the collector asks the "
                             "stations again for what is missing) instead of stopping it (SIGTERM)")
    parser.add_argument("--drain-s", type=float, default=120.0, help="how long stations wait for their outbox")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--store-overhead", type=int, default=0, metavar="PARTS",
                        help="instead of the fleet: the outbox's cost to one store's writes, over PARTS parts")
    # one station process (started by the fleet)
    parser.add_argument("--station", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mqtt-url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.station:
        run_station(args.station, args.folder, args.mqtt_url, args.rate, args.seconds, args.drain_s)
        return
    result = store_overhead(args.store_overhead) if args.store_overhead else run_fleet(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
