"""Benchmark of site calibration (``edge-inspect models calibrate``) on new parts of the magnetic tiles.

    nice -n 10 .venv/bin/python bench/bench_site_calibration.py [--sizes 20,40,all] [--draws 20] [--json FILE]

The parts split of bench_vision_anomaly.py: a good-only model trains on the 526 training tiles; the
152 held-out good tiles (whole runs: new parts, no sibling in training) are cut by run into two
halves, and so are the defect tiles. One half's good tiles calibrate the threshold with the
product's own rule (``edge.site_calibration.site_threshold``: the 96th percentile of their scores),
the other half's good and defect tiles measure false rejects and misses; then the halves swap.
Subsets smaller than a half are drawn ``--draws`` times per half, and all figures are averaged. The
baseline is the threshold the training run chose from its own images, on the same halves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.site_calibration import site_threshold  # noqa: E402
from models.runtime import load_model  # noqa: E402
from vision.anomaly import train_anomaly_model  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_vision_anomaly import DATA, run_of_file, score_files, split_by_part  # noqa: E402

FALSE_REJECT = 0.04


def halves_by_run(paths: list[Path], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of two halves of ``paths`` that share no run (no tile in both)."""
    run_of, _ = run_of_file(0)
    runs = sorted({run_of(p) for p in paths})
    first = set(np.random.default_rng(seed).permutation(runs)[: len(runs) // 2].tolist())
    mask = np.array([run_of(p) in first for p in paths])
    return mask, ~mask


def rates(good: np.ndarray, defects: np.ndarray, threshold: float) -> tuple[float, float]:
    return float((good >= threshold).mean()), float((defects < threshold).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,40,all", help="good images used to calibrate (per half)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=20, help="random calibration subsets per size and half")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no development data at {DATA}")
    train, test_good, defects = split_by_part(args.seed)
    defect_paths = [p for paths in defects.values() for p in paths]
    with tempfile.TemporaryDirectory() as work:
        build = Path(work) / "model"
        report = train_anomaly_model(train, {}, "bench", build, threads=2)
        trained_threshold = report.manifest.threshold
        model = load_model(build, threads=2)
        (good_scores, _), (defect_scores, _) = score_files(model, test_good), score_files(model, defect_paths)
    print(f"# trained on {len(train)} good tiles; {len(test_good)} new good tiles and {len(defect_paths)} "
          f"defect tiles, each cut into two halves by run; threshold from training {trained_threshold:.3f}")
    good_halves, defect_halves = halves_by_run(test_good, 1), halves_by_run(defect_paths, 2)
    rng = np.random.default_rng(3)
    outcomes: dict[str, list[tuple[float, float, float, int]]] = {}
    for fold in (0, 1):
        calibrate_good = good_scores[good_halves[fold]]
        test_good_scores, test_defects = good_scores[good_halves[1 - fold]], defect_scores[defect_halves[1 - fold]]
        outcomes.setdefault("training threshold", []).append(
            (trained_threshold, *rates(test_good_scores, test_defects, trained_threshold), 0))
        for size in args.sizes.split(","):
            count = len(calibrate_good) if size == "all" else int(size)
            for _ in range(1 if size == "all" else args.draws):
                chosen = rng.choice(calibrate_good, count, replace=False).tolist()
                threshold = site_threshold(chosen, FALSE_REJECT)
                outcomes.setdefault(f"site, {size} good", []).append(
                    (threshold, *rates(test_good_scores, test_defects, threshold), count))
    results: list[dict[str, Any]] = []
    for label, values in outcomes.items():
        mean = np.mean(values, axis=0)
        row = {"variant": label, "calibration_good": round(float(mean[3]), 1), "runs": len(values),
               "threshold": round(float(mean[0]), 3), "false_reject_rate": round(float(mean[1]), 4),
               "miss_rate": round(float(mean[2]), 4)}
        results.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
