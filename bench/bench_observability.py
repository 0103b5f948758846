"""Cost of observability per part, in one run on one machine:

- end to end: POST /api/v1/verdicts/vision on the real service (``edge-inspect run``, loopback),
  sequential, with the request log off (the baseline), on as text, and on as JSON; the three services
  run in interleaved rounds so a busy host affects them alike;
- in process: what a part adds to /metrics (the stage observations: decode, quality, model,
  store_commit, and the verdict counter and latency), timed over many calls.

Prints medians and percentiles and each variant's ratio to the baseline.
Usage: .venv/bin/python bench/bench_observability.py [--requests 400] [--rounds 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from modelkit import make_brightness_model  # noqa: E402
from support import LiveService, free_port, jpeg  # noqa: E402

from edge.metrics import StationMetrics  # noqa: E402

VARIANTS: dict[str, dict[str, object]] = {
    "no request log": {"requests": False}, "text request log": {"requests": True, "format": "text"},
    "json request log": {"requests": True, "format": "json"}}


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {"n": len(samples_ms), "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99))}


def start(folder: Path, logging: dict[str, object]) -> tuple[subprocess.Popen[bytes], str]:
    data = folder / "data"
    make_brightness_model(data / "models")
    config = folder / "station.yaml"
    config.write_text(yaml.safe_dump({
        "station": {"id": "bench"}, "storage": {"data_dir": str(data), "save_images": "none", "min_free_mb": 10},
        "models": {"threads": 1, "vision": "bright-spot"}, "api": {"host": "127.0.0.1", "port": 8080},
        "logging": logging}))
    service = LiveService(config, free_port()).start(timeout_s=60)
    return service.process, service.url


def end_to_end(requests: int, rounds: int) -> dict[str, dict[str, float]]:
    images = [jpeg(spot=i % 5 == 0, seed=i) for i in range(16)]
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        services = {name: start(Path(tmp) / str(i), logging) for i, (name, logging) in enumerate(VARIANTS.items())}
        try:
            clients = {name: httpx.Client(base_url=url, timeout=10) for name, (_, url) in services.items()}
            for http in clients.values():  # warm-up
                for image in images:
                    http.post("/api/v1/verdicts/vision", content=image, headers={"content-type": "image/jpeg"})
            for _ in range(rounds):
                for name, http in clients.items():
                    for i in range(requests // rounds):
                        started = time.perf_counter()
                        answer = http.post("/api/v1/verdicts/vision", content=images[i % len(images)],
                                           headers={"content-type": "image/jpeg"})
                        samples[name].append((time.perf_counter() - started) * 1000.0)
                        assert answer.status_code == 200, answer.text
        finally:
            for process, _ in services.values():
                process.terminate()
                process.wait(15)
    return {name: percentiles(values) for name, values in samples.items()}


def per_part_metrics(parts: int) -> dict[str, float]:
    metrics = StationMetrics()
    timings: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(parts):
            for stage in ("decode", "quality", "model", "store_commit"):
                metrics.stage_latency.labels(stage).observe(0.003)
            metrics.verdicts.labels("vision", "OK", "bright-spot").inc()
            metrics.verdict_latency.labels("vision", "api").observe(0.01)
        timings.append((time.perf_counter() - started) / parts * 1e6)
    return {"us_per_part_median": float(np.median(timings)), "parts": parts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per variant")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    e2e = end_to_end(args.requests, args.rounds)
    base = e2e["no request log"]["p50"]
    ratios = {name: round(v["p50"] / base, 3) for name, v in e2e.items()}
    per_part = per_part_metrics(20_000)
    result = {"host": platform.node(), "cpus": os.cpu_count(), "end_to_end_ms": e2e,
              "ratio_p50_to_no_request_log": ratios, "metrics_per_part": per_part,
              "command": " ".join([Path(sys.executable).name, *sys.argv])}
    for name, figures in e2e.items():
        print(f"{name:<18} p50 {figures['p50']:.2f} ms  p90 {figures['p90']:.2f} ms  p99 {figures['p99']:.2f} ms  "
              f"x{ratios[name]:.3f}")
    print(f"metrics per part: {per_part['us_per_part_median']:.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
