"""Benchmark of the good-only anomaly model on the magnetic-tile development data.

    nice -n 10 .venv/bin/python bench/bench_vision_anomaly.py [--sizes 16,100,all] [--splits images,parts]
        [--repeats 3] [--retrain-25] [--bank-only]

Two splits (fixed seeds), each holding out good tiles that are never trained on; models are trained
on 16, 100 and all remaining good tiles and tested on the held-out good tiles plus every defect tile:

* ``images``: a random 178 of the 678 good images (the usual protocol for this data set);
* ``parts``: whole runs of consecutive file numbers. The data set photographs each tile several
  times, under different lights (``exp1``..``exp6`` with nearby numbers), so a random image split
  leaves a held-out tile's siblings in training, and a large memory bank then recognises the tile
  rather than judging it. Holding out number runs (a gap of more than 150 starts a new run) keeps
  the siblings together: this is what a line sees, where every part is new.

Training sets smaller than ``--repeats-below`` are drawn ``--repeats`` times and the figures averaged.
Reports image AUROC (overall and per defect class), false-reject and miss rates at the
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
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.manifest import ImageInput  # noqa: E402
from models.runtime import LoadedModel, load_model  # noqa: E402
from vision.anomaly import AnomalyParams, train_anomaly_model  # noqa: E402
from vision.anomaly.calibration import auroc  # noqa: E402
from vision.anomaly.images import image_files  # noqa: E402
from vision.images import read_image_file  # noqa: E402
from vision.preprocess import to_tensor  # noqa: E402

DATA = REPO.parent / "shared" / "datasets" / "magnetic-tile"
DEFECT_CLASSES = ["blowhole", "break", "crack", "fray", "uneven"]
BASELINE = AnomalyParams(height=256, width=256, map_stride_override=0, standardize=False, pad=0,
                         projection_dims=0, coreset="random", position_norm=False, flips=False, lighting_ramp=0.0,
                         map_sigma=0.0, bank_size=10000)
# the same textbook recipe, but with our fast greedy coreset instead of random sampling
BASELINE_GREEDY = replace(BASELINE, coreset="greedy")
# ours without the per-position Gaussians (the recipe before 2026-12-02)
BANK_ONLY = AnomalyParams(position_gaussian=0.0)


def split(seed: int, held_out: int) -> tuple[list[Path], list[Path], dict[str, list[Path]]]:
    """Random images: ``held_out`` good images for testing, the rest to train on."""
    free = image_files(DATA / "free")
    order = np.random.default_rng(seed).permutation(len(free))
    test_good = [free[i] for i in order[:held_out]]
    pool = [free[i] for i in order[held_out:]]
    return pool, test_good, {c: image_files(DATA / c) for c in DEFECT_CLASSES}


def _file_number(path: Path) -> int:
    match = re.search(r"num_(\d+)", path.name)
    return int(match.group(1)) if match else 0


def run_of_file(seed: int, share: float = 0.26,
                gap: int = 150) -> tuple[Callable[[Path], int], set[int]]:
    """Each image's run of nearby file numbers (one tile under several lights: a gap of more than
    ``gap`` starts a new run), and a seeded ``share`` of the runs to hold out."""
    every = [p for c in ["free", *DEFECT_CLASSES] for p in image_files(DATA / c)]
    numbers = sorted({_file_number(p) for p in every})
    runs, run = {}, 0
    for index, number in enumerate(numbers):
        run += index > 0 and number - numbers[index - 1] > gap
        runs[number] = run
    held = set(np.random.default_rng(seed).permutation(run + 1)[: round(share * (run + 1))].tolist())
    return (lambda path: runs[_file_number(path)]), held


def split_by_part(seed: int) -> tuple[list[Path], list[Path], dict[str, list[Path]]]:
    """Whole runs (the same tile under several lights) held out together; every defect tile tests."""
    run_of, held = run_of_file(seed)
    free = image_files(DATA / "free")
    return ([p for p in free if run_of(p) not in held], [p for p in free if run_of(p) in held],
            {c: image_files(DATA / c) for c in DEFECT_CLASSES})


def score_files(model: LoadedModel, paths: list[Path]) -> tuple[np.ndarray, list[float]]:
    """Anomaly scores of image files and the time of each (decode excluded), on the model's threads."""
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    scores, times = [], []
    for path in paths:
        pixels = read_image_file(path).pixels
        start = time.perf_counter()
        out = model.run(to_tensor(pixels, spec))
        times.append(time.perf_counter() - start)
        scores.append(float(out["score"][0]))
    return np.asarray(scores), times


def evaluate(model_dir: Path, test_good: list[Path], defects: dict[str, list[Path]]) -> dict[str, Any]:
    model = load_model(model_dir, threads=2)
    threshold = model.manifest.threshold
    good_scores, times = score_files(model, test_good)
    per_class = {c: score_files(model, p) for c, p in defects.items()}
    defect_scores = np.concatenate([s for s, _ in per_class.values()])
    for _, t in per_class.values():
        times.extend(t)
    return {
        "auroc": auroc(good_scores, defect_scores),
        # the best a threshold could do at 5 % false rejects (set on the test goods themselves)
        "miss_rate_at_5pct_false_reject": float((defect_scores < np.quantile(good_scores, 0.95)).mean()),
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


def mean_of(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures averaged over repeated draws (per-class AUROC too)."""
    merged: dict[str, Any] = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, float | int) and not isinstance(value, bool):
            merged[key] = round(float(np.mean([r[key] for r in results])), 4)
        elif isinstance(value, dict):
            merged[key] = {k: round(float(np.mean([r[key][k] for r in results])), 3) for k in value}
    merged["draws"] = len(results)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="16,100,all", help="training-set sizes (good images), comma separated")
    parser.add_argument("--splits", default="images,parts", help="images, parts or both (see above)")
    parser.add_argument("--held-out", type=int, default=178, help="good images held out by the images split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="draws of each small training set")
    parser.add_argument("--repeats-below", type=int, default=50)
    parser.add_argument("--baseline-sizes", default="16,all", help="sizes with a baseline run too")
    parser.add_argument("--retrain-25", action="store_true", help="also time a retrain from 25 good images")
    parser.add_argument("--bank-only", action="store_true",
                        help="also run ours without the per-position Gaussians at every size (same-run ablation)")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-anomaly-") as tmp:
        work = Path(tmp)
        for split_name in args.splits.split(","):
            pool, test_good, defects = split(args.seed, args.held_out) if split_name == "images" else \
                split_by_part(args.seed)
            print(f"# split {split_name}: {len(pool)} good for training, {len(test_good)} good + "
                  f"{sum(len(v) for v in defects.values())} defects for testing (seed {args.seed})", flush=True)
            sizes = [len(pool) if s == "all" else int(s) for s in args.sizes.split(",") if s]
            baseline_sizes = {len(pool) if s == "all" else int(s) for s in args.baseline_sizes.split(",") if s}
            for size in sizes:
                draws = args.repeats if size < args.repeats_below else 1
                for label, params in [("ours", AnomalyParams()), ("ours-bank-only", BANK_ONLY),
                                      ("baseline", BASELINE), ("baseline-greedy", BASELINE_GREEDY)]:
                    if label == "ours-bank-only" and not args.bank_only:
                        continue
                    if label.startswith("baseline") and size not in baseline_sizes:
                        continue
                    runs = []
                    for draw in range(draws):
                        rng = np.random.default_rng(args.seed + 1 + draw)
                        train = [pool[i] for i in sorted(rng.permutation(len(pool))[:size])]
                        runs.append(run(label, params, train, test_good, defects, work))
                    result = mean_of(runs) | {"split": split_name}
                    print("mean " + json.dumps(result), flush=True)
                    results.append(result)
            if args.retrain_25 and split_name == "images":
                started = time.perf_counter()
                train_anomaly_model(pool[:25], {}, "bench", work / "retrain25", threads=2)
                retrain = {"retrain_25_good_s": round(time.perf_counter() - started, 1)}
                print(json.dumps(retrain), flush=True)
                results.append(retrain)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
