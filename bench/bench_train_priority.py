"""Retraining on a busy station: training time with the trainer at idle or low priority, alone and
beside other work (issue 3: retraining never disturbs inspection, and a technician retrains in
about a minute).

`edge-inspect train` runs the training in a child process that is niced and, at the default
priority ``idle``, SCHED_IDLE: it runs only on CPU time nothing else wants. This benchmark trains
the same good-only model from 25 development tiles, first alone, then beside N processes at normal
priority that keep one CPU each busy a share of the time (``--duty``), with the trainer at each
priority. It prints each run's wall time, the CPU the trainer got (cores on average) and the ratio
to the same priority alone, in the same run. A run beside other work that has not finished after
``--timeout`` seconds is cancelled and reported as such.

    .venv/bin/python bench/bench_train_priority.py [--duty 0.9,1.0] [--good 25] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.synchronize
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.training import Priority, TrainingCancelled, train  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402
from vision.anomaly.images import image_files  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "magnetic-tile" / "free"


def busy(duty: float, stop: multiprocessing.synchronize.Event) -> None:
    """Keep one CPU busy ``duty`` of each 20 ms, at normal priority."""
    while not stop.is_set():
        until = time.perf_counter() + 0.02 * duty
        while time.perf_counter() < until:
            pass
        if duty < 1.0:
            time.sleep(0.02 * (1.0 - duty))


def timed_training(good: list[Path], priority: Priority, work: Path, timeout_s: float) -> dict[str, Any]:
    registry = ModelRegistry(work / f"models-{time.monotonic_ns()}", bundled_root=None)
    cancel = threading.Event()
    timer = threading.Timer(timeout_s, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        outcome = train("vision", {"good": good}, "bench", registry, priority=priority, cancel=cancel)
        return {"wall_s": round(outcome.duration_s, 1), "cpu_cores": round(outcome.cpu_cores, 2), "finished": True}
    except TrainingCancelled:
        return {"wall_s": round(time.monotonic() - started, 1), "cpu_cores": None, "finished": False}
    finally:
        timer.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=25, help="good tiles to train on")
    parser.add_argument("--duty", default="0.9,1.0", help="busy shares of the other work, comma separated")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes of other work (default: one per CPU)")
    parser.add_argument("--timeout", type=float, default=300.0, help="cancel a run after this many seconds")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data")
    good = image_files(DATA)[: args.good]
    results: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as tmp:
        alone: dict[str, float] = {}
        for priority in ("idle", "low"):
            row = {"priority": priority, "other_work": "none"} | timed_training(good, priority, Path(tmp), args.timeout)
            alone[priority] = row["wall_s"]
            print(json.dumps(row), flush=True)
            results.append(row)
        for duty in (float(d) for d in args.duty.split(",")):
            for priority in ("idle", "low"):
                stop = context.Event()
                workers = [context.Process(target=busy, args=(duty, stop), daemon=True) for _ in range(args.workers)]
                for worker in workers:
                    worker.start()
                try:
                    row = timed_training(good, priority, Path(tmp), args.timeout)
                finally:
                    stop.set()
                    for worker in workers:
                        worker.join(5)
                row = {"priority": priority, "other_work": f"{args.workers} x {duty:.0%} busy"} | row
                row["ratio_to_alone"] = round(row["wall_s"] / alone[priority], 2) if row["finished"] else None
                print(json.dumps(row), flush=True)
                results.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
