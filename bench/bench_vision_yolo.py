"""Benchmark of the ultralytics YOLO classifier (issue 3 (b), optional ``yolo`` extra, AGPL-3.0) on the
magnetic-tile development data, with the split of bench_vision_classifier.py so the figures compare.

    nice -n 10 .venv/bin/python bench/bench_vision_yolo.py [--epochs 30] [--imgsz 128] [--resize stretch]
        [--split images|parts]

Splits as in bench_vision_classifier.py (``images``: random good tiles and halves of every defect
class; ``parts``: whole runs of the same tile held out); the trainer holds out 20 % of its
training images per class to pick the weights and the threshold. Reports accuracy over the six
classes by the manifest's rule (models.decision.judge_outputs), miss rate (defect judged OK), false
rejects, per-class accuracy, training time and inference time per image on 2 threads (decoded image
to decision: preprocessing included). Needs the development data; it is never copied into the repo.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vision.yolo import INSTALL_HINT, available  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from bench_vision_anomaly import DATA  # noqa: E402
from bench_vision_classifier import classifier_split, score_classifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-good", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resize", choices=["stretch", "crop"], default="stretch")
    parser.add_argument("--split", choices=["images", "parts"], default="images")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: the benchmark needs the magnetic-tile development data")
    if not available():
        raise SystemExit(f"ultralytics is not installed: {INSTALL_HINT}")
    from vision.yolo.train import train_yolo_classifier

    pool, test_good, train_defects, test_defects = classifier_split(args.split, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-yolo-") as tmp:
        build = Path(tmp) / "build"
        started = time.perf_counter()
        report = train_yolo_classifier(
            pool[: args.train_good], train_defects, "bench-yolo", build, epochs=args.epochs, imgsz=args.imgsz,
            batch=args.batch, threads=2, resize=args.resize, seed=args.seed,
            progress=lambda f, m: print(f"[{f * 100:5.1f}%] {m}", file=sys.stderr, flush=True))
        train_s = time.perf_counter() - started
        result = {"split": args.split, "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                  "resize": args.resize, "train_good": min(args.train_good, len(pool)),
                  "train_defects": {k: len(v) for k, v in train_defects.items()}, "train_s": round(train_s, 1),
                  "onnx_kb": round((build / "model.onnx").stat().st_size / 1024)}
        result |= score_classifier(build, test_good, test_defects) | {"validation": report.metrics}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
