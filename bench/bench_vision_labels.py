"""Accuracy from labels: misses and false rejects on new tiles against the number of labelled defects
per class the classifier was trained with (issue 21).

    nice -n 10 .venv/bin/python bench/bench_vision_labels.py [--per-class 3,10,all] [--good 150] [--folds 2]
        [--json FILE]

Every development tile (good and defect alike) is grouped by its run of nearby file numbers (the photos
of one tile, models.evaluation.number_runs) and the runs are dealt into ``--folds`` folds. For each fold,
``edge-inspect train vision``'s classifier (vision.classifier) is trained on ``--good`` good tiles and
``k`` labelled defect tiles per class from the other folds, for each ``k`` of ``--per-class`` (the
same draw grows: the 3 tiles of k = 3 are among the 10 of k = 10), and judges every tile of this fold
by its manifest's rule; the good-only anomaly model trained on the same good tiles (k = 0) is the
start of the curve. Reported per k, pooled over folds: accuracy over six classes, misses and false
rejects with Wilson intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_vision_anomaly import DATA, DEFECT_CLASSES  # noqa: E402
from bench_vision_classifier import score_classifier  # noqa: E402

from models.evaluation import grouped_folds, number_runs, wilson_interval  # noqa: E402
from vision.anomaly import train_anomaly_model  # noqa: E402
from vision.anomaly.images import image_files  # noqa: E402
from vision.classifier.train import train_classifier_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", default="3,10,all")
    parser.add_argument("--good", type=int, default=150)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    started = time.time()
    files = {c: image_files(DATA / c) for c in ["free", *DEFECT_CLASSES]}
    every = [(c, p) for c, paths in files.items() for p in paths]
    runs = number_runs([p for _, p in every])
    folds = grouped_folds(runs, args.folds, args.seed)
    sizes = [s for s in args.per_class.split(",") if s]
    pooled: dict[str, dict[str, int]] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        for fold, test_index in enumerate(folds):
            test = set(test_index.tolist())
            train = [every[i] for i in range(len(every)) if i not in test]
            rng = np.random.default_rng(args.seed + fold)
            good_pool = [p for c, p in train if c == "free"]
            good = [good_pool[i] for i in sorted(rng.permutation(len(good_pool))[: args.good])]
            order = {c: [p for k, p in train if k == c] for c in DEFECT_CLASSES}
            order = {c: [paths[i] for i in rng.permutation(len(paths))] for c, paths in order.items()}
            test_good = [every[i][1] for i in sorted(test) if every[i][0] == "free"]
            test_defects = {c: [every[i][1] for i in sorted(test) if every[i][0] == c] for c in DEFECT_CLASSES}
            for size in ["0", *sizes]:
                build = Path(tmp) / f"fold{fold}-{size}"
                mark = time.perf_counter()
                if size == "0":
                    train_anomaly_model(good, {}, "bench", build, threads=2)
                    labelled: dict[str, list[Path]] = {}
                else:
                    labelled = {c: paths if size == "all" else paths[: int(size)] for c, paths in order.items()}
                    train_classifier_model(good, labelled, "bench", build, threads=2)
                train_s = time.perf_counter() - mark
                result = score_anomaly_or_classifier(build, test_good, test_defects)
                row = {"fold": fold, "per_class": size, "labelled": {c: len(v) for c, v in labelled.items()},
                       "train_s": round(train_s, 1), **result}
                rows.append(row)
                print(json.dumps(row), flush=True)
                counts = pooled.setdefault(size, {"correct": 0, "cases": 0, "missed": 0, "defects": 0,
                                                  "rejected": 0, "good": 0})
                n_defects = sum(result["test_defects"].values())
                counts["correct"] += round(result["accuracy"] * (result["test_good"] + n_defects))
                counts["cases"] += result["test_good"] + n_defects
                counts["missed"] += round(result["miss_rate"] * n_defects)
                counts["defects"] += n_defects
                counts["rejected"] += round(result["false_reject_rate"] * result["test_good"])
                counts["good"] += result["test_good"]
    summary = {size: {"accuracy": round(c["correct"] / c["cases"], 4),
                      "accuracy_interval": [round(1 - v, 4) for v in wilson_interval(c["cases"] - c["correct"],
                                                                                     c["cases"])][::-1],
                      "miss": f"{c['missed']}/{c['defects']}", "miss_rate": round(c["missed"] / c["defects"], 4),
                      "miss_interval": [round(v, 4) for v in wilson_interval(c["missed"], c["defects"])],
                      "false_reject": f"{c['rejected']}/{c['good']}",
                      "false_reject_rate": round(c["rejected"] / c["good"], 4),
                      "false_reject_interval": [round(v, 4) for v in wilson_interval(c["rejected"], c["good"])]}
               for size, c in pooled.items()}
    print(json.dumps(summary, indent=1))
    print(f"# total {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows, "args": vars(args)}, default=str))


def score_anomaly_or_classifier(build: Path, test_good: list[Path],
                                test_defects: dict[str, list[Path]]) -> dict[str, Any]:
    """score_classifier of bench_vision_classifier; an anomaly model's NG is labelled 'anomalous', so its
    accuracy counts a defect judged NG as right (it names no class) and reports the same rates."""
    result = score_classifier(build, test_good, test_defects)
    manifest = json.loads((build / "manifest.json").read_text())
    if manifest["kind"] == "vision-anomaly":
        n_defects = sum(len(v) for v in test_defects.values())
        caught = round((1 - result["miss_rate"]) * n_defects)
        kept = round((1 - result["false_reject_rate"]) * len(test_good))
        result["accuracy"] = round((caught + kept) / (n_defects + len(test_good)), 4)
        result["accuracy_note"] = "anomaly model: a defect judged NG counts as right (two classes)"
    return result


if __name__ == "__main__":
    main()
