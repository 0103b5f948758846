"""Inspection while a technician retrains (issue 3: "retraining never disturbs inspection").

One run on one machine: the real service (uvicorn on loopback) judges magnetic tiles posted by an
AOI-style client (back to back, or paced at --rate parts per second), first alone (the baseline),
then while `edge-inspect train vision` trains a new version of the same model in its own
lower-priority process and promotes it. Prints the verdict latency of both phases (median and
percentiles, and their ratio), failed requests, how long training took beside inspection and
(trained once more, the service idle) alone, and when the service began judging with the new version.

Usage: .venv/bin/python bench/bench_retrain.py [--good 100] [--rate 10] [--baseline-s 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_api import load_images, percentiles, start_service  # noqa: E402

from vision.sources import image_files  # noqa: E402

GOOD_TILES = ROOT.parent / "shared" / "datasets" / "magnetic-tile" / "free"
MODEL = "tile-anomaly"


@dataclass
class Sample:
    at: float  # seconds since the client started
    latency_ms: float
    version: int | None  # None: the request failed
    status: int


@dataclass
class Client:
    """Posts images one after another until stopped, recording every answer."""

    url: str
    images: list[bytes]
    rate: float = 0.0  # requests per second; 0: back to back (the worst case for training)
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.perf_counter()
        with httpx.Client(base_url=self.url, timeout=30) as http:
            index = 0
            while not self.stop.is_set():
                data = self.images[index % len(self.images)]
                index += 1
                if self.rate > 0:  # paced like a line: the next part arrives on schedule
                    self.stop.wait(max(0.0, started + index / self.rate - time.perf_counter()))
                sent = time.perf_counter()
                try:
                    response = http.post("/api/v1/verdicts/vision", content=data,
                                         headers={"content-type": "image/jpeg"})
                    status = response.status_code
                    version = response.json()["model"]["version"] if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                self.samples.append(Sample(sent - started, (time.perf_counter() - sent) * 1000.0, version, status))


def train_beside(config: Path, good: list[Path], folder: Path) -> tuple[float, int, str]:
    """Run the CLI's training (its own process, lower priority) on links to ``good``; wall s, rc, tail."""
    folder.mkdir()
    for path in good:
        (folder / path.name).symlink_to(path)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "edge.cli", "train", "vision", "--config", str(config),
                           "--good", str(folder), "--name", MODEL], cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-600:]


def phase(samples: list[Sample], start: float, end: float) -> dict[str, float]:
    chosen = [s.latency_ms for s in samples if start <= s.at < end and s.status == 200]
    return percentiles(chosen) if chosen else {"n": 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=100, help="good tiles to retrain from")
    parser.add_argument("--baseline-s", type=float, default=60.0, help="inspection alone before training")
    parser.add_argument("--after-s", type=float, default=15.0, help="inspection after training ends")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the service")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="parts per second the client posts (default 0: back to back, the worst case)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not GOOD_TILES.is_dir():
        print(f"needs the development data in {GOOD_TILES}")
        return 2
    images, image_note = load_images(60)
    every_good = image_files(GOOD_TILES)
    good = every_good[:: max(1, len(every_good) // args.good)][: args.good]
    print(f"# edge-inspect: inspection during retraining; {os.cpu_count()} cores, Python {platform.python_version()}")
    pace = f"{args.rate:g} parts/s" if args.rate > 0 else "back to back"
    print(f"# service judges {image_note}, {pace}; training: {len(good)} good tiles, model {MODEL}")

    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as work:
        workdir = Path(work)
        process, url = start_service(workdir, MODEL, args.threads, None, "full")
        try:
            client = Client(url, images, args.rate)
            worker = threading.Thread(target=client.run, name="aoi-client")
            worker.start()
            time.sleep(args.baseline_s)
            train_start = client.samples[-1].at if client.samples else 0.0
            train_s, rc, tail = train_beside(workdir / "station.yaml", good, workdir / "good")
            train_end = client.samples[-1].at
            time.sleep(args.after_s)
            client.stop.set()
            worker.join(60)
            # the same training with the service idle: the reference for the training time
            alone_s, alone_rc, _ = train_beside(workdir / "station.yaml", good, workdir / "good-again")
        finally:
            process.terminate()
            process.wait(20)

    samples = client.samples
    versions = sorted({s.version for s in samples if s.version is not None})
    first_new = next((s.at for s in samples if s.version is not None and s.version == max(versions)), None)
    results = {
        "images": image_note, "rate_per_s": args.rate, "good_tiles": len(good),
        "train_s": train_s, "train_rc": rc, "train_alone_s": alone_s, "train_alone_rc": alone_rc,
        "baseline_ms": phase(samples, 5.0, train_start),  # the first seconds warm the session up
        "during_training_ms": phase(samples, train_start, train_end),
        "after_ms": phase(samples, train_end, float("inf")),
        "requests": len(samples), "failed": sum(s.status != 200 for s in samples),
        "versions_seen": versions,
        "new_version_after_training_s": None if first_new is None or len(versions) < 2 else first_new - train_end,
    }
    base, during = results["baseline_ms"], results["during_training_ms"]
    assert isinstance(base, dict) and isinstance(during, dict)
    if base.get("n") and during.get("n"):
        results["ratio_p50"] = during["p50"] / base["p50"]
        results["ratio_p99"] = during["p99"] / base["p99"]
    row = "{:<22} {:>6} {:>8} {:>8} {:>8}"
    print(row.format("", "n", "p50 ms", "p90 ms", "p99 ms"))
    for label, key in (("inspection alone", "baseline_ms"), ("during training", "during_training_ms"),
                       ("after promotion", "after_ms")):
        r = results[key]
        assert isinstance(r, dict)
        if r.get("n"):
            print(row.format(label, r["n"], f"{r['p50']:.1f}", f"{r['p90']:.1f}", f"{r['p99']:.1f}"))
    print(f"ratio during / alone: p50 {results.get('ratio_p50', float('nan')):.2f}, "
          f"p99 {results.get('ratio_p99', float('nan')):.2f}")
    print(f"training: {train_s:.1f} s beside inspection (exit {rc}), {alone_s:.1f} s alone (exit {alone_rc}); "
          f"failed requests {results['failed']} "
          f"of {len(samples)}; versions judged with {versions}; new version in use "
          f"{results['new_version_after_training_s']} s after training ended")
    if rc != 0:
        print(tail)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0 if rc == 0 and alone_rc == 0 and results["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
