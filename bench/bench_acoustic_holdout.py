"""Normal-only sound models judged on clips kept aside: repeated draws of training clips (issue 21).

    .venv/bin/python bench/bench_acoustic_holdout.py [--sizes 4,8,11] [--draws 20] [--target 0.05] [--json FILE]

Fan id_00 (MIMII, 0 dB): each draw trains ``edge-inspect train acoustic``'s model (acoustic.training, the
ONNX graph judged through AcousticInspector) on ``size`` random normal clips and judges the other normal
clips and all 10 abnormal clips; no judged clip chose anything. Four conditions: the level used or
ignored, each on the clips as recorded and with every clip (training and test) scaled to one loudness
(-30 dBFS RMS), where the level says nothing and the spectrum must carry the model alone.

Reported per condition and size: AUC (mean and lowest over draws, and the AUC of all draws' scores
pooled with a bootstrap interval that resamples whole clips), and the normal clips rejected and the
abnormal clips passed at the threshold each model wrote (pooled counts, Wilson intervals).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from acoustic.inspector import AcousticInspector  # noqa: E402
from acoustic.training import read_wav, train_acoustic_model  # noqa: E402
from models.evaluation import Target, auroc, auroc_interval, wilson_interval  # noqa: E402
from models.runtime import load_model  # noqa: E402

FAN = REPO.parent / "shared" / "datasets" / "mimii-fan-id00"
LOUDNESS_DBFS = -30.0


def one_loudness(waveform: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64))))
    return (waveform * (10 ** (LOUDNESS_DBFS / 20) / max(rms, 1e-9))).astype(np.float32)


def write_clips(folder: Path, paths: list[Path], normalise: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        waveform, rate = read_wav(path)
        target = folder / path.name
        sf.write(str(target), one_loudness(waveform) if normalise else waveform, rate, subtype="PCM_16")
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4,8,11")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not FAN.is_dir():
        raise SystemExit(f"{FAN} not found: the benchmark needs the development clips")
    started = time.time()
    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sound-") as tmp:
        work = Path(tmp)
        for normalise in (False, True):
            clips = write_clips(work / f"normal-{normalise}", normal, normalise)
            faults = write_clips(work / f"abnormal-{normalise}", abnormal, normalise)
            levels: tuple[Literal["use", "ignore"], ...] = ("use", "ignore")
            for level in levels:
                name = f"level {level}, {'one loudness' if normalise else 'as recorded'}"
                for size in (int(s) for s in args.sizes.split(",")):
                    results[f"{name}, {size} clips"] = run_condition(
                        clips, faults, size, args.draws, level, Target(args.target), work)
                    print(json.dumps({name: results[f"{name}, {size} clips"]}), flush=True)
    print(f"# total {time.time() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "args": vars(args)}, default=str, indent=1))


def run_condition(clips: list[Path], faults: list[Path], size: int, draws: int, level: Literal["use", "ignore"],
                  target: Target, work: Path) -> dict[str, Any]:
    aucs: list[float] = []
    pooled_normal: list[float] = []
    pooled_abnormal: list[float] = []
    normal_groups: list[str] = []
    abnormal_groups: list[str] = []
    rejected = judged_normal = missed = judged_abnormal = 0
    for draw in range(draws if size < len(clips) - 1 else len(clips)):
        if size >= len(clips) - 1:  # leave one clip out, each in turn
            test_index = [draw]
        else:
            test_index = sorted(np.random.default_rng(100 * size + draw).permutation(len(clips))[: len(clips) - size])
        train = [c for i, c in enumerate(clips) if i not in test_index]
        build = work / f"build-{level}-{size}-{draw}"
        report = train_acoustic_model(train, {}, "bench", build, level=level, target=target)
        inspector = AcousticInspector(load_model(build), warm=False)
        threshold = report.manifest.threshold
        normal_scores = [score(inspector, clips[i]) for i in test_index]
        abnormal_scores = [score(inspector, path) for path in faults]
        aucs.append(auroc(normal_scores, abnormal_scores))
        pooled_normal += normal_scores
        pooled_abnormal += abnormal_scores
        normal_groups += [clips[i].name for i in test_index]
        abnormal_groups += [path.name for path in faults]
        rejected += sum(s >= threshold for s in normal_scores)
        judged_normal += len(normal_scores)
        missed += sum(s < threshold for s in abnormal_scores)
        judged_abnormal += len(abnormal_scores)
    low, high = auroc_interval(pooled_normal, pooled_abnormal, normal_groups, abnormal_groups, draws=500)
    return {"draws": len(aucs), "auc_mean": round(float(np.mean(aucs)), 4), "auc_min": round(float(np.min(aucs)), 4),
            "auc_pooled": round(auroc(pooled_normal, pooled_abnormal), 4), "auc_pooled_interval": [round(low, 4),
                                                                                                     round(high, 4)],
            "false_reject": f"{rejected}/{judged_normal}",
            "false_reject_rate": round(rejected / judged_normal, 4),
            "false_reject_interval": [round(v, 4) for v in wilson_interval(rejected, judged_normal)],
            "miss": f"{missed}/{judged_abnormal}", "miss_rate": round(missed / judged_abnormal, 4),
            "miss_interval": [round(v, 4) for v in wilson_interval(missed, judged_abnormal)]}


def score(inspector: AcousticInspector, path: Path) -> float:
    waveform, rate = read_wav(path)
    result = inspector.judge(waveform, rate)
    if result.score is None:
        raise RuntimeError(f"{path}: not judged ({result.reason})")
    return result.score


if __name__ == "__main__":
    main()
