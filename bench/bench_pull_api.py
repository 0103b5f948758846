"""Pull API benchmark (issue 20): a station database of 1,000,000 verdicts, pulled through the cursor API
of the real service (`edge-inspect run` on loopback), and filtered queries on it.

1. build: verdicts written through the store (VerdictStore.record, the path the service uses), in
   group commits of up to 5,000 parts; 200 batches (lots) of 5,000 parts, one verdict per part, about 2 %
   NG and 0.5 % INVALID, 1 in 500 verdicts overridden. Kept at --db and reused when it already holds
   the verdicts asked for (build time is printed when it is built).
2. pull: every verdict through GET /api/v1/verdicts?since=&limit= until has_more is false, measured at
   the client (httpx, one connection, JSON parsed); checks that ids are exactly 1..N once each.
3. filtered: GET /api/v1/verdicts with one lot (its first page of 100, and the whole lot of 5,000 in
   pages of 1,000), one serial, one batch, NG of one lot; medians and p95 over --rounds requests.

    .venv/bin/python bench/bench_pull_api.py --verdicts 1000000 --json bench/results/pull_api.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.store import NewVerdict, PartContext, VerdictStore  # noqa: E402

STATION = "bench-pull"
LOT_SIZE = 5000
CHUNK = 20_000  # parts in flight at once (the writer's queue holds 50,000)


def lot_name(index: int) -> str:
    return f"LOT-{index:05d}"


def serial_name(index: int) -> str:
    return f"SN-{index:08d}"


def judged(rng: random.Random) -> NewVerdict:
    roll = rng.random()
    if roll < 0.02:
        return NewVerdict("vision", "NG", rng.choice(["crack", "blowhole", "anomaly"]), 0.5 + rng.random() / 2,
                          0.5, "tile-anomaly", 1 + (roll < 0.01), 20.0 + rng.random())
    if roll < 0.025:
        return NewVerdict("vision", "INVALID", "invalid", None, 0.5, "tile-anomaly", 1, 3.0, reason="blurred")
    return NewVerdict("vision", "OK", "good", rng.random() / 2, 0.5, "tile-anomaly", 1, 20.0 + rng.random())


def build(path: Path, verdicts: int, seed: int = 1) -> dict[str, float]:
    """Write ``verdicts`` parts (one verdict each) through the store; returns the build figures."""
    rng = random.Random(seed)
    store = VerdictStore(path, commit_interval_s=0.05, max_batch=5000, sync="normal")
    store.start()
    started = time.perf_counter()
    try:
        written = 0
        while written < verdicts:
            lot = lot_name(written // LOT_SIZE)
            store.open_batch(lot, STATION, "bench").result()
            end = min(verdicts, written + LOT_SIZE)
            while written < end:
                upto = min(end, written + CHUNK)
                futures = [store.record(PartContext(STATION, "bench", serial=serial_name(i)), [judged(rng)])
                           for i in range(written, upto)]
                for future in futures:
                    future.result()
                written = upto
            batch = store.batches(open_only=True, limit=1)[0]
            store.close_batch(batch.id, "bench").result()
        overrides = [store.override(i, "OK", "user:bench", "re-inspected") for i in range(250, verdicts + 1, 500)]
        for done in overrides:
            done.result()
        wall = time.perf_counter() - started
        commits = store.writer.commits
    finally:
        store.close()
    return {"verdicts": verdicts, "build_s": round(wall, 1), "rows_per_s": round(verdicts / wall),
            "commits": commits}


def stored_verdicts(path: Path) -> int:
    if not path.exists():
        return 0
    store = VerdictStore(path)
    try:
        return store.counts()["verdicts"]
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`edge-inspect run` on a loopback port over the benchmark database (no sources; loopback reads are open)."""
    config = {"station": {"id": STATION}, "storage": {"data_dir": str(workdir / "data"), "sync": "normal"},
              "models": {"threads": 1, "vision": "tile-anomaly"}}
    path = workdir / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "service.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(path), "--port", str(port),
                                "--no-sources"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"service did not become ready; see {workdir / 'service.log'}")


def pull_all(url: str, limit: int) -> dict[str, float]:
    """Every verdict through the cursor, as a QMS would pull them; checks each id arrives exactly once."""
    ids: list[int] = []
    requests = 0
    cursor = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            page = http.get("/api/v1/verdicts", params={"since": cursor, "limit": limit}).raise_for_status().json()
            requests += 1
            ids.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
    wall = time.perf_counter() - started
    if ids != list(range(1, len(ids) + 1)):
        raise RuntimeError("the pull did not get every id exactly once, in order")
    return {"limit": limit, "verdicts": len(ids), "requests": requests, "wall_s": round(wall, 1),
            "verdicts_per_s": round(len(ids) / wall)}


def export_all(url: str, pid: int, fmt: str) -> dict[str, float | str]:
    """The whole table as one streamed download; the service's peak memory shows nothing is held whole."""
    rss_before = peak_rss_mb(pid)
    size = 0
    lines = 0
    started = time.perf_counter()
    with httpx.stream("GET", f"{url}/api/v1/verdicts/export", params={"format": fmt}, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
    wall = time.perf_counter() - started
    return {"format": fmt, "wall_s": round(wall, 1), "mb": round(size / 1e6), "lines": lines,
            "service_peak_rss_mb_before": rss_before, "service_peak_rss_mb_after": peak_rss_mb(pid)}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def timed(http: httpx.Client, params: dict[str, str | int], expect: int | None) -> float:
    started = time.perf_counter()
    page = http.get("/api/v1/verdicts", params=params).raise_for_status().json()
    elapsed = (time.perf_counter() - started) * 1000.0
    if expect is not None and len(page["items"]) != expect:
        raise RuntimeError(f"{params}: {len(page['items'])} items, expected {expect}")
    return elapsed


def whole_lot(http: httpx.Client, lot: str) -> float:
    started = time.perf_counter()
    cursor, count = 0, 0
    while True:
        page = http.get("/api/v1/verdicts", params={"lot": lot, "since": cursor, "limit": 1000}).json()
        count += len(page["items"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    if count != LOT_SIZE:
        raise RuntimeError(f"lot {lot}: {count} verdicts, expected {LOT_SIZE}")
    return (time.perf_counter() - started) * 1000.0


def filtered(url: str, verdicts: int, rounds: int, seed: int = 2) -> dict[str, dict[str, float]]:
    """Median and p95 of filtered requests at the client, each round with another lot or serial."""
    rng = random.Random(seed)
    lots = verdicts // LOT_SIZE
    cases: dict[str, Callable[[], float]] = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        def created(verdict_id: int) -> str:
            return str(http.get(f"/api/v1/verdicts/{verdict_id}").raise_for_status().json()["created_at"])

        def span() -> float:  # a tenth of the verdicts, anywhere
            start = rng.randrange(1, verdicts - verdicts // 10)
            return timed(http, {"from": created(start), "to": created(start + verdicts // 10), "limit": 100}, 100)

        cases = {
            "one time span (from/to, a tenth of the verdicts), first page of 100": span,
            "unfiltered, first page of 100 after a random cursor (baseline)":
                lambda: timed(http, {"since": rng.randrange(verdicts - 100), "limit": 100}, 100),
            "one lot, first page of 100": lambda: timed(http, {"lot": lot_name(rng.randrange(lots)), "limit": 100},
                                                        100),
            "one lot, all 5,000 verdicts (5 pages of 1,000)": lambda: whole_lot(http, lot_name(rng.randrange(lots))),
            "one serial": lambda: timed(http, {"serial": serial_name(rng.randrange(verdicts))}, 1),
            "one batch id, first page of 100": lambda: timed(http, {"batch": rng.randrange(1, lots + 1),
                                                                    "limit": 100}, 100),
            "NG of one lot": lambda: timed(http, {"lot": lot_name(rng.randrange(lots)), "decision": "NG",
                                                  "limit": 1000}, None),
            "NG, first page of 100 after a random cursor": lambda: timed(
                http, {"decision": "NG", "since": rng.randrange(verdicts // 2), "limit": 100}, 100),
        }
        results = {}
        for name, case in cases.items():
            for _ in range(5):  # warm-up
                case()
            results[name] = percentiles([case() for _ in range(rounds)])
    return results


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max_ms": round(ordered[-1], 2), "n": len(ordered)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "results" / "pull_api",
                        help="holds data/verdicts.db (reused when it has --verdicts verdicts) and the service log")
    parser.add_argument("--limits", type=int, nargs="+", default=[1000, 10000], help="page sizes of the full pull")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cases", nargs="+", default=["pull", "filtered", "export"],
                        choices=["pull", "filtered", "export"])
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    db = args.workdir / "data" / "verdicts.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"command": " ".join(sys.argv), "started": datetime.now(UTC).isoformat(),
                                 "host": platform.node(), "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    if stored_verdicts(db) != args.verdicts:
        for leftover in db.parent.glob(db.name + "*"):
            leftover.unlink()
        result["build"] = build(db, args.verdicts)
        print(json.dumps(result["build"]), flush=True)
    if args.build_only:
        return 0
    process, url = start_service(args.workdir)
    try:
        if "pull" in args.cases:
            result["pull"] = [pull_all(url, limit) for limit in args.limits]
            print(json.dumps(result["pull"]), flush=True)
        if "filtered" in args.cases:
            result["filtered"] = filtered(url, args.verdicts, args.rounds)
        if "export" in args.cases:
            result["export"] = [export_all(url, process.pid, fmt) for fmt in ("ndjson", "csv")]
            print(json.dumps(result["export"]), flush=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
