"""Benchmark of the good-only anomaly model on the magnetic-tile development data.

    nice -n 10 .venv/bin/python bench/bench_vision_anomaly.py [--sizes 16,100,all] [--retrain-25]

Split (fixed seed): a random part of free/ is held out as unseen good tiles; models are trained
on 16, 100 and all remaining good tiles and tested on the held-out good tiles plus every defect
tile. Reports image AUROC (overall and per defect class), false-reject and miss rates at the
threshold the training set itself chose from good images only, training time, and inference
time per image (decode excluded; preprocessing, backbone, search and heat map included) on
2 threads. The baseline is the textbook recipe measured in the same run: 256x256 stretched,
stage-3 + stage-5 features at stride 8, no per-image normalisation, plain random coreset, raw
nearest-neighbour distance; "baseline-greedy" is the same with our fast greedy coreset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.manifest import ImageInput  # noqa: E402
from models.runtime import load_model  # noqa: E402
from vision.anomaly import AnomalyParams, train_anomaly_model  # noqa: E402
from vision.anomaly.calibration import auroc  # noqa: E402
from vision.anomaly.images import image_files  # noqa: E402
from vision.images import read_image_file  # noqa: E402
from vision.preprocess import to_tensor  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "magnetic-tile"
DEFECT_CLASSES = ["blowhole", "break", "crack", "fray", "uneven"]
BASELINE = AnomalyParams(height=256, width=256, map_stride_override=0, standardize=False, pad=0,
                         projection_dims=0, coreset="random", position_norm=False, flips=False, map_sigma=0.0,
                         bank_size=10000)
# the same textbook recipe, but with our fast greedy coreset instead of random sampling
BASELINE_GREEDY = replace(BASELINE, coreset="greedy")


def split(seed: int, held_out: int) -> tuple[list[Path], list[Path], dict[str, list[Path]]]:
    free = image_files(DATA / "free")
    order = np.random.default_rng(seed).permutation(len(free))
    test_good = [free[i] for i in order[:held_out]]
    pool = [free[i] for i in order[held_out:]]
    return pool, test_good, {c: image_files(DATA / c) for c in DEFECT_CLASSES}


def evaluate(model_dir: Path, test_good: list[Path], defects: dict[str, list[Path]]) -> dict[str, Any]:
    model = load_model(model_dir, threads=2)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    threshold = model.manifest.threshold

    def score_all(paths: list[Path]) -> tuple[np.ndarray, list[float]]:
        scores, times = [], []
        for path in paths:
            pixels = read_image_file(path).pixels
            start = time.perf_counter()
            out = model.run(to_tensor(pixels, spec))
            times.append(time.perf_counter() - start)
            scores.append(float(out["score"][0]))
        return np.asarray(scores), times

    good_scores, times = score_all(test_good)
    per_class = {c: score_all(p) for c, p in defects.items()}
    defect_scores = np.concatenate([s for s, _ in per_class.values()])
    for _, t in per_class.values():
        times.extend(t)
    return {
        "auroc": auroc(good_scores, defect_scores),
        "auroc_per_class": {c: round(auroc(good_scores, s), 3) for c, (s, _) in per_class.items()},
        "false_reject_rate": float((good_scores >= threshold).mean()),
        "miss_rate": float((defect_scores < threshold).mean()),
        "inference_ms_median": 1000 * float(np.median(times)),
        "inference_ms_p95": 1000 * float(np.percentile(times, 95)),
    }


def run(label: str, params: AnomalyParams, train: list[Path], test_good: list[Path],
        defects: dict[str, list[Path]], work: Path) -> dict[str, Any]:
    build = work / f"{label}-{len(train)}"
    started = time.perf_counter()
    report = train_anomaly_model(train, {}, "bench", build, threads=2, params=params)
    train_s = time.perf_counter() - started
    result = {"variant": label, "good_images": len(train), "train_s": round(train_s, 1),
              "bank": report.counts["bank"], "onnx_mb": round((build / "model.onnx").stat().st_size / 1e6, 1)}
    result |= evaluate(build, test_good, defects)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,100,all", help="training-set sizes (good images), comma separated")
    parser.add_argument("--held-out", type=int, default=178, help="good tiles held out for testing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-sizes", default="16,all", help="sizes with a baseline run too")
    parser.add_argument("--retrain-25", action="store_true", help="also time a retrain from 25 good images")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    pool, test_good, defects = split(args.seed, args.held_out)
    print(f"# {len(pool)} good for training, {len(test_good)} good + "
          f"{sum(len(v) for v in defects.values())} defects for testing (seed {args.seed})", flush=True)
    def parse(text: str) -> list[int]:
        return [len(pool) if s == "all" else int(s) for s in text.split(",") if s]

    sizes, baseline_sizes = parse(args.sizes), set(parse(args.baseline_sizes))
    rng = np.random.default_rng(args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="bench-anomaly-") as tmp:
        work = Path(tmp)
        for size in sizes:
            train = [pool[i] for i in sorted(rng.permutation(len(pool))[:size])]
            run("ours", AnomalyParams(), train, test_good, defects, work)
            if size in baseline_sizes:
                run("baseline", BASELINE, train, test_good, defects, work)
                run("baseline-greedy", BASELINE_GREEDY, train, test_good, defects, work)
        if args.retrain_25:
            started = time.perf_counter()
            train_anomaly_model(pool[:25], {}, "bench", work / "retrain25", threads=2)
            print(json.dumps({"retrain_25_good_s": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
