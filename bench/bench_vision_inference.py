"""Inference time of a vision model, against a reference measured in the same run.

    nice -n 10 .venv/bin/python bench/bench_vision_inference.py [--model models/tile-anomaly/1] [--rounds 5]

The shared benchmark hosts change speed from hour to hour (the same model has measured 17 to 35 ms
median), so one figure alone says little. Each round times, interleaved on the same images:

* **model**: the station's path for one decoded image, ``vision.preprocess.to_tensor`` plus one
  run of the model's ONNX (backbone, search, heat map), on the model's 2 threads;
* **reference**: the issue's yardstick, the bundled Lite0 extractor (``lite0_features.onnx``, all
  four stage outputs) on a 256x256 RGB tensor, 2 threads; issue 3 measured it at about 6 ms.

Images: development tiles when ``../shared`` is there, else the bundled samples, each also scaled
to 1024x1024 px (the largest size the target names). Prints medians, 95th percentiles and
model / reference; ratio x 6 ms is the model's time projected onto the issue's host.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.manifest import ImageInput  # noqa: E402
from models.runtime import create_session, load_model  # noqa: E402
from vision.images import read_image_file  # noqa: E402
from vision.preprocess import to_tensor  # noqa: E402

BACKBONE = REPO / "models" / "backbones" / "lite0_features.onnx"
ISSUE_REFERENCE_MS = 6.0  # issue 3: the Lite0 extractor at 256 px, 2 threads, on the host that set the target
DEV_TILES = REPO.parent / "shared" / "datasets" / "magnetic-tile" / "free"
SAMPLES = REPO / "samples" / "magnetic-tile"


def timing_images(count: int) -> list[np.ndarray]:
    """Decoded images: development tiles or bundled samples, native size and scaled to 1024x1024."""
    folder = DEV_TILES if DEV_TILES.is_dir() else SAMPLES
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})[:count]
    native = [read_image_file(p).pixels for p in paths]
    return native + [cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_LINEAR) for image in native]


def percentiles(times_ms: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(times_ms)), 2), "p95": round(float(np.percentile(times_ms, 95)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "tile-anomaly" / "1")
    parser.add_argument("--images", type=int, default=20, help="images per round (each also at 1024x1024)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    model = load_model(args.model, threads=args.threads)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    reference = create_session(BACKBONE, args.threads)
    reference_input = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    images = timing_images(args.images)
    for _ in range(3):
        reference.run(None, {"image": reference_input})
        model.run(to_tensor(images[0], spec))

    model_ms: list[float] = []
    reference_ms: list[float] = []
    for _ in range(args.rounds):
        for image in images:  # interleaved, so both see the same host load
            start = time.perf_counter()
            model.run(to_tensor(image, spec))
            model_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            reference.run(None, {"image": reference_input})
            reference_ms.append(1000 * (time.perf_counter() - start))
    ratio = float(np.median(model_ms) / np.median(reference_ms))
    result = {"model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
              "threads": args.threads, "runs": len(model_ms), "model_ms": percentiles(model_ms),
              "reference_ms": percentiles(reference_ms), "ratio": round(ratio, 2),
              "projected_on_issue_host_ms": round(ratio * ISSUE_REFERENCE_MS, 1)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
