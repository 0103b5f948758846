"""Benchmark of the appliance spine, in one run on one machine:

- bare model: onnxruntime session.run alone on the preprocessed images (the baseline);
- end to end: POST /api/v1/verdicts/vision on the real service (uvicorn, loopback), sequential
  and with 4 concurrent clients, from request to durable verdict, measured at the client;
- the store: verdict rows per second through the group-committing writer.

Prints medians and percentiles and the ratio end-to-end / bare model.
Usage: .venv/bin/python bench/bench_api.py [--requests 300] [--model tile-anomaly] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import LiveService, free_port  # noqa: E402

from edge.store import NewVerdict, PartContext, VerdictStore  # noqa: E402
from models.manifest import ImageInput  # noqa: E402
from models.registry import ModelRegistry  # noqa: E402
from models.runtime import load_model  # noqa: E402
from vision.images import decode_image  # noqa: E402
from vision.preprocess import to_tensor  # noqa: E402
from vision.sources import image_files  # noqa: E402

DATASET = ROOT.parent / "shared" / "datasets" / "magnetic-tile"


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {"n": len(samples_ms), "p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)),
            "p99": float(np.percentile(values, 99)), "mean": float(values.mean())}


def load_images(limit: int) -> tuple[list[bytes], str]:
    if DATASET.is_dir():
        files = [p for folder in sorted(DATASET.iterdir()) if folder.is_dir() for p in image_files(folder)
                 if p.suffix == ".jpg"]
        rng = np.random.default_rng(0)
        picked = [files[i] for i in rng.choice(len(files), size=min(limit, len(files)), replace=False)]
        return [p.read_bytes() for p in picked], f"{len(picked)} magnetic-tile images (dev dataset)"
    files = image_files(ROOT / "samples" / "magnetic-tile")
    return [p.read_bytes() for p in files], f"{len(files)} bundled sample images"


def bare_model(model_name: str, images: list[bytes], threads: int, rounds: int,
               models_dir: Path) -> dict[str, float]:
    registry = ModelRegistry(models_dir)
    model = load_model(registry.get(model_name).folder, threads=threads)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput), f"{model_name} is not a vision model"
    tensors = [to_tensor(decode_image(data).pixels, spec) for data in images]
    samples = []
    for _ in range(rounds):
        for tensor in tensors:
            started = time.perf_counter()
            model.run(tensor)
            samples.append((time.perf_counter() - started) * 1000.0)
    return percentiles(samples)


def start_service(workdir: Path, model_name: str, threads: int, models_dir: Path | None,
                  sync: str) -> tuple[subprocess.Popen[bytes], str]:
    if models_dir is not None:
        shutil.copytree(models_dir, workdir / "data" / "models")
    config = {"station": {"id": "bench"},
              "storage": {"data_dir": str(workdir / "data"), "save_images": "ng", "sync": sync},
              "models": {"threads": threads, "vision": model_name}, "api": {"max_upload_mb": 50}}
    path = workdir / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    service = LiveService(path, free_port(), "--no-sources").start(timeout_s=60)
    return service.process, service.url


def post_all(url: str, images: list[bytes], count: int, offset: int, samples: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        for i in range(count):
            data = images[(i + offset) % len(images)]
            started = time.perf_counter()
            response = http.post("/api/v1/verdicts/vision", content=data, headers={"content-type": "image/jpeg"})
            elapsed = (time.perf_counter() - started) * 1000.0
            if response.status_code != 200:
                raise RuntimeError(f"request failed: {response.status_code} {response.text}")
            samples.append(elapsed)


def end_to_end(url: str, images: list[bytes], requests: int, clients: int) -> dict[str, float]:
    post_all(url, images, 20, 0, [])  # warm-up
    samples: list[float] = []
    per_client = requests // clients
    threads = [threading.Thread(target=post_all, args=(url, images, per_client, c * 7, samples))
               for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {**percentiles(samples), "verdicts_per_s": len(samples) / wall}


def store_throughput(rows: int, writers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = VerdictStore(Path(folder) / "bench.db")
        store.start()
        verdict = NewVerdict("vision", "OK", "good", 0.1, 0.5, "bench", 1, 5.0, details={"width": 640, "height": 480})

        def write(n: int) -> None:
            futures = [store.record(PartContext("bench", "api", lot="LOT-1"), [verdict]) for _ in range(n)]
            for future in futures:
                future.result()

        threads = [threading.Thread(target=write, args=(rows // writers,)) for _ in range(writers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        commits = store.writer.commits
        store.close()
    return {"rows": rows, "rows_per_s": rows / wall, "commits": commits}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tile-anomaly")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime threads (station default: 2)")
    parser.add_argument("--store-rows", type=int, default=50_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="extra model folder (<name>/<version>/); default: the bundled models only")
    args = parser.parse_args()

    images, image_note = load_images(args.images)
    print(f"# edge-inspect API benchmark: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"# model {args.model}, {image_note}, onnxruntime threads={args.threads}")
    results: dict[str, object] = {"model": args.model, "images": image_note}

    models_dir = args.models_dir or Path(tempfile.mkdtemp()) / "models"
    bare = bare_model(args.model, images, args.threads, max(1, args.requests // len(images)), models_dir)
    results["bare_model_ms"] = bare
    for sync in ("full", "normal"):
        with tempfile.TemporaryDirectory() as workdir:
            process, url = start_service(Path(workdir), args.model, args.threads, args.models_dir, sync)
            try:
                results[f"http_sequential_ms_sync_{sync}"] = end_to_end(url, images, args.requests, clients=1)
                results[f"http_4_clients_ms_sync_{sync}"] = end_to_end(url, images, args.requests, clients=4)
            finally:
                process.terminate()
                process.wait(20)
    sequential = results["http_sequential_ms_sync_full"]
    concurrent = results["http_4_clients_ms_sync_full"]
    assert isinstance(sequential, dict) and isinstance(concurrent, dict)
    results["store"] = store_throughput(args.store_rows, writers=4)

    target = 1.5 * bare["p50"] + 5.0
    results["ratio_e2e_over_bare_p50"] = sequential["p50"] / bare["p50"]
    results["target_e2e_p50_ms"] = target

    row = "{:<28} {:>8.2f} {:>8.2f} {:>8.2f} {:>10}"
    print(f"{'':<28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'verdicts/s':>10}")
    print(row.format("bare model (onnxruntime)", bare["p50"], bare["p90"], bare["p99"], "-"))
    for sync in ("full", "normal"):
        for label, key in (("sequential", "http_sequential_ms"), ("4 clients", "http_4_clients_ms")):
            r = results[f"{key}_sync_{sync}"]
            assert isinstance(r, dict)
            print(row.format(f"HTTP {label}, sync={sync}", r["p50"], r["p90"], r["p99"], f"{r['verdicts_per_s']:.0f}"))
    print(f"ratio end-to-end (sync=full, the default) / bare model, p50 sequential: "
          f"{results['ratio_e2e_over_bare_p50']:.2f}x; "
          f"overhead {sequential['p50'] - bare['p50']:.2f} ms")
    print(f"target: e2e p50 <= 1.5 x bare + 5 ms = {target:.2f} ms -> "
          f"{'MET' if sequential['p50'] <= target else 'MISSED'} ({sequential['p50']:.2f} ms)")
    store = results["store"]
    assert isinstance(store, dict)
    print(f"store: {store['rows_per_s']:.0f} verdict rows/s from 4 writers ({store['rows']} rows, "
          f"{store['commits']} commits) -> {'MET' if store['rows_per_s'] >= 5000 else 'MISSED'} (target 5000)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
