"""Benchmark of the supervised defect classifier on the magnetic-tile development data.

    nice -n 10 .venv/bin/python bench/bench_vision_classifier.py [--train-good 500] [--split images|parts]

Splits (fixed seeds), as in bench_vision_anomaly.py: ``images`` holds out 178 random good tiles and
one random half of every defect class; ``parts`` holds out whole runs of nearby file numbers (the
same tile photographed under several lights), good and defect tiles alike, so no test tile has a
sibling in training. Reports accuracy over the six classes with the
manifest's decision rule (models.decision.judge_outputs), miss rate (defect judged OK), false
rejects, per-class accuracy, training time and inference time per image on 2 threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.decision import judge_outputs  # noqa: E402
from models.manifest import ImageInput  # noqa: E402
from models.runtime import load_model  # noqa: E402
from vision.classifier import train_classifier_model  # noqa: E402
from vision.images import read_image_file  # noqa: E402
from vision.preprocess import to_tensor  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_vision_anomaly import DATA, run_of_file, split  # noqa: E402

Paths = list[Path]


def classifier_split(name: str, seed: int) -> tuple[Paths, Paths, dict[str, Paths], dict[str, Paths]]:
    """(training good, test good, training defects, test defects) of the ``images`` or ``parts`` split."""
    pool, test_good, defects = split(seed, 178)
    if name == "parts":
        run_of, held = run_of_file(seed)
        every = pool + test_good
        pool = [p for p in every if run_of(p) not in held]
        test_good = [p for p in every if run_of(p) in held]
        return (pool, test_good, {c: [p for p in ps if run_of(p) not in held] for c, ps in defects.items()},
                {c: [p for p in ps if run_of(p) in held] for c, ps in defects.items()})
    rng = np.random.default_rng(seed + 2)
    train_defects, test_defects = {}, {}
    for label, paths in defects.items():
        order = rng.permutation(len(paths))
        half = len(paths) // 2
        train_defects[label] = [paths[i] for i in sorted(order[:half])]
        test_defects[label] = [paths[i] for i in sorted(order[half:])]
    return pool, test_good, train_defects, test_defects


def score_classifier(build: Path, test_good: Paths, test_defects: dict[str, Paths]) -> dict[str, Any]:
    """Accuracy (by the manifest's rule), misses, false rejects, per-class accuracy and inference time."""
    model = load_model(build, threads=2)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    cases = [(p, "good") for p in test_good] + [(p, c) for c, ps in test_defects.items() for p in ps]
    correct, times = [], []
    per_class: dict[str, list[bool]] = {}
    missed, false_rejects = 0, 0
    for path, truth in cases:
        pixels = read_image_file(path).pixels
        start = time.perf_counter()
        judgement = judge_outputs(model.manifest, model.run(to_tensor(pixels, spec)))
        times.append(time.perf_counter() - start)
        correct.append(judgement.label == truth)
        per_class.setdefault(truth, []).append(judgement.label == truth)
        missed += truth != "good" and judgement.decision == "OK"
        false_rejects += truth == "good" and judgement.decision == "NG"
    n_defects = sum(len(v) for v in test_defects.values())
    return {
        "test_good": len(test_good), "test_defects": {k: len(v) for k, v in test_defects.items()},
        "accuracy": round(float(np.mean(correct)), 4), "miss_rate": round(missed / n_defects, 4),
        "false_reject_rate": round(false_rejects / len(test_good), 4),
        "per_class_accuracy": {k: round(float(np.mean(v)), 3) for k, v in per_class.items()},
        "threshold": model.manifest.threshold,
        "inference_ms_median": round(1000 * float(np.median(times)), 1),
        "inference_ms_p95": round(1000 * float(np.percentile(times, 95)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-good", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=["images", "parts"], default="images")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data")
    pool, test_good, train_defects, test_defects = classifier_split(args.split, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-classifier-") as tmp:
        build = Path(tmp) / "build"
        started = time.perf_counter()
        report = train_classifier_model(pool[: args.train_good], train_defects, "bench-classifier", build, threads=2)
        train_s = time.perf_counter() - started
        result = {"split": args.split, "train_good": min(args.train_good, len(pool)),
                  "train_defects": {k: len(v) for k, v in train_defects.items()}, "train_s": round(train_s, 1)}
        result |= score_classifier(build, test_good, test_defects) | {"cross_validated": report.metrics}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
