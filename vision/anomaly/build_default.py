"""Build the bundled default model ``models/tile-anomaly/1/`` from the development tiles.

    nice -n 10 .venv/bin/python -m vision.anomaly.build_default [--data ../shared/datasets/magnetic-tile]

Trains on every good tile in ``free/`` except a few kept aside (listed in the manifest), and
tunes the threshold with the defect folders. Uses exactly the code path of ``edge-inspect train``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from models.manifest import write_manifest
from vision.anomaly.images import image_files
from vision.anomaly.train import train_anomaly_model

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "magnetic-tile"
DEFECT_CLASSES = ("blowhole", "break", "crack", "fray", "uneven")
KEPT_ASIDE = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=REPO / "models" / "tile-anomaly" / "1")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    free = image_files(args.data / "free")
    order = np.random.default_rng(2026).permutation(len(free))
    # keep aside a few random good tiles, and the demo samples (samples/magnetic-tile/free_<name>)
    samples = {p.name.removeprefix("free_") for p in (REPO / "samples" / "magnetic-tile").glob("free_*")}
    aside = sorted({free[i].name for i in order[:KEPT_ASIDE]} | (samples & {p.name for p in free}))
    good = [p for p in free if p.name not in aside]
    defects = {c: image_files(args.data / c) for c in DEFECT_CLASSES if (args.data / c).is_dir()}
    with tempfile.TemporaryDirectory(prefix="tile-anomaly-") as tmp:
        build = Path(tmp) / "build"
        report = train_anomaly_model(good, defects, "tile-anomaly", build, threads=args.threads,
                                     progress=lambda f, m: print(f"{100 * f:5.1f}% {m}", flush=True))
        data = dict(report.manifest.training.data)
        data["source"] = "magnetic-tile development data (Huang, Qiu, Yuan, The Visual Computer 2020)"
        data["good_kept_aside"] = aside
        manifest = report.manifest.model_copy(
            update={"training": report.manifest.training.model_copy(update={"data": data}),
                    "description": "Bundled demo model: magnetic tile surfaces, trained on good tiles only"})
        write_manifest(build, manifest)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        for item in build.iterdir():
            shutil.copy2(item, args.out / item.name)
    print(json.dumps({"out": str(args.out), "threshold": manifest.threshold, "timings_s": report.timings_s,
                      "metrics": manifest.metrics, "onnx_mb": (args.out / "model.onnx").stat().st_size / 1e6}))


if __name__ == "__main__":
    main()
