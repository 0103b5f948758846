"""Inspection while the maintenance workbench retrains and compares (issue 19: "inspection never slows").

One run on one machine: the real service (uvicorn on loopback) judges magnetic tiles posted by an
AOI-style client (back to back, or paced at --rate parts per second). A technician's token first confirms
--good good tiles (each becomes a labelled sample with its image); then the client runs alone (the
baseline), the workbench retrains from the samples through the API (POST /api/v1/training-jobs: its own
low-priority process) and then compares the candidate with the running model on the held-back samples
(GET .../compare: also its own process). Prints the verdict latency in each phase (median and
percentiles, and the ratio to the baseline), failed requests, how long training and comparing took, and
how many progress updates the job showed.

Usage: .venv/bin/python bench/bench_workbench.py [--good 40] [--rate 10] [--baseline-s 30] [--json out.json]
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
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from bench_api import load_images  # noqa: E402
from bench_retrain import GOOD_TILES, MODEL, Client, phase  # noqa: E402
from support import LiveService, free_port  # noqa: E402

from vision.sources import image_files  # noqa: E402


def start_service(workdir: Path, threads: int, priority: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """The service keeping every image (confirmed parts become samples with their image)."""
    config = {"station": {"id": "bench"}, "storage": {"data_dir": str(workdir / "data"), "save_images": "all"},
              "models": {"threads": threads, "vision": MODEL}, "api": {"max_upload_mb": 50},
              "training": {"priority": priority}, "workbench": {"sample_band": 0.0}}
    path = workdir / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    service = LiveService(path, free_port(), "--no-sources").start(timeout_s=60)
    return service.process, service.url, path


def maintenance_token(config: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "edge.cli", "tokens", "create", "--name", "bench-tech", "--scope",
                          "maintenance", "--json", "--config", str(config)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return {"Authorization": f"Bearer {json.loads(out)['token']}"}


def collect(url: str, headers: dict[str, str], good: list[Path]) -> None:
    """Judge each good tile and confirm it under the technician's token: a labelled 'good' sample."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for path in good:
            judged = http.post("/api/v1/verdicts/vision", content=path.read_bytes(),
                               headers={"content-type": "image/jpeg" if path.suffix == ".jpg" else "image/png"})
            judged.raise_for_status()
            decided = http.post(f"/api/v1/verdicts/{judged.json()['id']}/override", headers=headers,
                                json={"decision": "OK", "reason": "bench: a good tile"})
            decided.raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--good", type=int, default=40, help="good tiles confirmed as samples")
    parser.add_argument("--baseline-s", type=float, default=30.0, help="inspection alone before retraining")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads of the service")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="parts per second the client posts (default 0: back to back, the worst case)")
    parser.add_argument("--priority", choices=["idle", "low"], default="idle", help="training.priority")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not GOOD_TILES.is_dir():
        print(f"needs the development data in {GOOD_TILES}")
        return 2
    images, image_note = load_images(60)
    every_good = [p for p in image_files(GOOD_TILES) if p.suffix == ".jpg"]
    good = every_good[:: max(1, len(every_good) // args.good)][: args.good]
    print(f"# edge-inspect: inspection during workbench retraining and compare; {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    pace = f"{args.rate:g} parts/s" if args.rate > 0 else "back to back"
    print(f"# service judges {image_note}, {pace}; samples: {len(good)} confirmed good tiles; priority {args.priority}")

    with tempfile.TemporaryDirectory(prefix="bench-workbench-") as work:
        process, url, config = start_service(Path(work), args.threads, args.priority)
        try:
            headers = maintenance_token(config)
            collect(url, headers, good)
            client = Client(url, images, args.rate)
            worker = threading.Thread(target=client.run, name="aoi-client")
            worker.start()
            time.sleep(args.baseline_s)
            with httpx.Client(base_url=url, timeout=900, headers=headers) as http:
                train_start = client.samples[-1].at if client.samples else 0.0
                started = time.perf_counter()
                job = http.post("/api/v1/training-jobs", json={"mode": "good-only"})
                job.raise_for_status()
                job_id, updates = job.json()["id"], set()
                while (state := http.get(f"/api/v1/training-jobs/{job_id}").json())["state"] in ("queued", "running"):
                    updates.add(state["fraction"])
                    time.sleep(0.5)
                train_s = time.perf_counter() - started
                train_end = client.samples[-1].at
                started = time.perf_counter()
                succeeded = state["state"] == "succeeded"
                compared = http.get(f"/api/v1/training-jobs/{job_id}/compare") if succeeded else None
                compare_s = time.perf_counter() - started
                compare_end = client.samples[-1].at
            client.stop.set()
            worker.join(60)
        finally:
            process.terminate()
            process.wait(20)

    samples = client.samples
    results = {
        "images": image_note, "rate_per_s": args.rate, "good_samples": len(good), "priority": args.priority,
        "job_state": state["state"], "job_error": state["error"], "progress_updates": len(updates),
        "train_s": train_s, "compare_s": compare_s,
        "compare_status": None if compared is None else compared.status_code,
        "baseline_ms": phase(samples, 5.0, train_start),  # the first seconds warm the session up
        "during_training_ms": phase(samples, train_start, train_end),
        "during_compare_ms": phase(samples, train_end, compare_end),
        "requests": len(samples), "failed": sum(s.status != 200 for s in samples),
    }
    base = results["baseline_ms"]
    row = "{:<22} {:>6} {:>8} {:>8} {:>8} {:>10}"
    print(row.format("", "n", "p50 ms", "p90 ms", "p99 ms", "p99 ratio"))
    for label, key in (("inspection alone", "baseline_ms"), ("during retraining", "during_training_ms"),
                       ("during compare", "during_compare_ms")):
        r = results[key]
        assert isinstance(r, dict) and isinstance(base, dict)
        if r.get("n"):
            ratio = r["p99"] / base["p99"] if base.get("n") else float("nan")
            results[f"{key}_p99_ratio"] = ratio
            print(row.format(label, r["n"], f"{r['p50']:.1f}", f"{r['p90']:.1f}", f"{r['p99']:.1f}", f"{ratio:.2f}"))
    print(f"job {results['job_state']} in {train_s:.1f} s ({len(updates)} progress values seen), compare "
          f"{compare_s:.1f} s (HTTP {results['compare_status']}); "
          f"failed requests {results['failed']} of {len(samples)}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
    ok = results["job_state"] == "succeeded" and results["compare_status"] == 200 and not results["failed"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
