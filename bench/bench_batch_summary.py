"""Benchmark of the QMS batch figures (issue 20), in one run on one machine:

1. a database with one batch of --verdicts verdicts (default 1,000,000), written through VerdictStore.record
   with the batch-figures listener (edge.quality.BatchFigures) in large group commits (sync normal): 2 % NG
   with five defect labels, 0.5 % INVALID, 1 % of the parts judged again, an operator override every 2,000
   parts; then the batch's summary (edge.quality.batch_summary, the code behind
   GET /api/v1/batches/{id}/summary), the station's current summary and the control charts, each repeated:
   median and p95.
2. the cost of the listener on VerdictStore.record: rows/s through the store without and with the listener,
   same process, same run, fresh databases, alternating rounds.

Usage: .venv/bin/python bench/bench_batch_summary.py [--verdicts 1000000] [--store-rows 30000] [--rounds 3]
       [--repeats 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.config import FiguresSettings  # noqa: E402
from edge.quality import BatchFigures, batch_charts, batch_summary, current_summary  # noqa: E402
from edge.store import NewVerdict, PartContext, StoredVerdict, VerdictStore  # noqa: E402

STATION = "bench-station"
LABELS = ["crack", "blowhole", "break", "fray", "uneven"]
CHUNK = 20_000  # records in flight at most (the writer's queue holds 50,000)


def new_store(path: Path, listener: bool) -> VerdictStore:
    store = VerdictStore(path, max_batch=10_000, sync="normal")
    if listener:
        store.add_listener(BatchFigures(FiguresSettings()))
    store.start()
    return store


def verdict(rng: random.Random) -> NewVerdict:
    roll = rng.random()
    if roll < 0.005:
        return NewVerdict("vision", "INVALID", "invalid", None, 2.47, "tile-anomaly", 3, 4.0, reason="blurred")
    if roll < 0.025:
        return NewVerdict("vision", "NG", rng.choice(LABELS), rng.uniform(2.5, 6.0), 2.47, "tile-anomaly", 3, 4.0)
    return NewVerdict("vision", "OK", "good", max(0.0, rng.gauss(1.13, 0.25)), 2.47, "tile-anomaly", 3, 4.0)


def fill(store: VerdictStore, parts: int, rng: random.Random, reinspect: float = 0.01,
         override_every: int = 0) -> tuple[int, float]:
    """Record ``parts`` parts (plus re-inspections); returns (verdicts written, seconds)."""
    started = time.perf_counter()
    written = 0
    pending: list[Future[StoredVerdict]] = []
    last: StoredVerdict | None = None
    for n in range(parts):
        pending.append(store.record(PartContext(STATION, "bench", serial=f"SN-{n:08d}"), [verdict(rng)]))
        written += 1
        if rng.random() < reinspect:
            pending.append(store.record(PartContext(STATION, "bench", serial=f"SN-{n:08d}"), [verdict(rng)]))
            written += 1
        if override_every and n % override_every == override_every - 1 and last is not None:
            store.override(last.verdict_id, "NG", "user:bench", "seen by eye", "scratch")
        if len(pending) >= CHUNK:
            last = pending[-1].result()
            pending.clear()
    for future in pending:
        future.result()
    return written, time.perf_counter() - started


def timed(call: Any, repeats: int) -> dict[str, float]:
    call()  # warm the page cache and the connection
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3),
            "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 3),
            "max_ms": round(samples[-1], 3), "repeats": repeats}


def bench_summary(folder: Path, verdicts: int, repeats: int) -> dict[str, Any]:
    store = new_store(folder / "big.db", listener=True)
    try:
        batch = store.open_batch("LOT-BENCH", STATION, "user:bench", "tile", "recipe-1").result()
        written, seconds = fill(store, int(verdicts / 1.01), random.Random(20), override_every=2000)
        while written < verdicts:  # top up to the exact count
            store.record(PartContext(STATION, "bench", serial=f"TOP-{written}"), [verdict(random.Random(written))]
                         ).result()
            written += 1
        conn = store.reader()
        settings = FiguresSettings()
        summary = batch_summary(conn, batch.id)
        result = {
            "verdicts": written, "build_s": round(seconds, 1), "build_rows_per_s": round(written / seconds),
            "database_mb": round((folder / "big.db").stat().st_size / 2**20, 1),
            "parts": summary.figures.parts, "ng": summary.figures.ng, "verdicts_counted": summary.figures.verdicts,
            "first_pass_yield": summary.figures.first_pass_yield, "hours": len(summary.per_hour),
            "batch_summary": timed(lambda: batch_summary(conn, batch.id), repeats),
            "current_summary": timed(lambda: current_summary(conn, STATION, 8), repeats),
            "control_charts_200_points": timed(lambda: batch_charts(conn, batch.id, settings.spc, 200), repeats),
        }
        assert summary.figures.verdicts == written, (summary.figures.verdicts, written)
        return result
    finally:
        store.close()


def bench_listener(folder: Path, rows: int, rounds: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"without": [], "with": []}
    for round_no in range(rounds):
        for variant in (("without", "with") if round_no % 2 == 0 else ("with", "without")):
            store = new_store(folder / f"rate-{variant}-{round_no}.db", listener=variant == "with")
            try:
                store.open_batch("LOT-RATE", STATION, "user:bench").result()
                written, seconds = fill(store, rows, random.Random(round_no))
            finally:
                store.close()
            rates[variant].append(written / seconds)
    without, with_listener = statistics.median(rates["without"]), statistics.median(rates["with"])
    return {"rows_per_round": rows, "rounds": rounds, "sync": "normal", "max_batch": 10_000,
            "without_listener_rows_per_s": round(without), "with_listener_rows_per_s": round(with_listener),
            "listener_cost_pct": round((1 - with_listener / without) * 100, 1),
            "per_round": {k: [round(v) for v in vs] for k, vs in rates.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verdicts", type=int, default=1_000_000)
    parser.add_argument("--store-rows", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-figures-") as tmp:
        folder = Path(tmp)
        result = {"machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
                             f"Python {platform.python_version()}",
                  "listener": bench_listener(folder, args.store_rows, args.rounds),
                  "summary": bench_summary(folder, args.verdicts, args.repeats)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
