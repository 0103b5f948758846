"""Train an acoustic model from WAV folders and write ``model.onnx`` + ``manifest.json``.

No abnormal clips -> a normal-only anomaly model; abnormal clips by fault label -> a
supervised classifier over ["normal", *fault labels]. The build folder is what
``ModelRegistry.register`` takes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from acoustic.anomaly_model import AnomalyParams, anomaly_onnx
from acoustic.classifier_model import ClassifierParams, classifier_onnx
from acoustic.features import FeatureConfig, LogMelExtractor
from acoustic.profile import spectral_profile
from models.manifest import ONNX_FILE, AudioInput, Manifest, TrainingInfo, sha256_of, write_manifest

Progress = Callable[[float, str], None]
NORMAL_LABEL = "normal"
ANOMALOUS_LABEL = "anomalous"
THRESHOLD_FACTOR = 2.5  # anomaly threshold = factor x median held-out normal score


class TrainingDataError(ValueError):
    """Training clips that are missing, unreadable or inconsistent."""


@dataclass
class TrainingReport:
    manifest: Manifest
    build_dir: Path
    onnx_path: Path
    n_clips: dict[str, int]
    n_windows: int
    duration_s: float
    metrics: dict[str, Any] = field(default_factory=dict)


def read_wav(path: Path) -> tuple[npt.NDArray[np.float32], int]:
    """A WAV file as mono float32 and its sample rate."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise TrainingDataError(f"{path}: cannot read as audio: {exc}") from exc
    return data.mean(axis=1, dtype=np.float32), int(rate)


def split_windows(
    waveform: npt.NDArray[np.float32], sample_rate: int, window_s: float
) -> list[npt.NDArray[np.float32]]:
    """Windows of ``window_s`` with 50 % overlap; a clip barely shorter gives itself."""
    n = round(window_s * sample_rate)
    if waveform.size < n:
        return [waveform]
    hop = max(1, n // 2)
    return [waveform[start : start + n] for start in range(0, waveform.size - n + 1, hop)]


def _load_clips(paths: Sequence[Path]) -> tuple[list[npt.NDArray[np.float32]], int]:
    clips: list[npt.NDArray[np.float32]] = []
    rates: set[int] = set()
    for path in paths:
        waveform, rate = read_wav(Path(path))
        clips.append(waveform)
        rates.add(rate)
    if len(rates) > 1:
        raise TrainingDataError(f"training clips have different sample rates {sorted(rates)}; resample them first")
    return clips, rates.pop()


def _anomaly_threshold(profiles_by_clip: list[npt.NDArray[np.float64]]) -> tuple[float, list[float]]:
    """Threshold from held-out normal scores: leave one clip out (or one window, for one clip)."""
    groups = profiles_by_clip if len(profiles_by_clip) >= 3 else [p[np.newaxis] for c in profiles_by_clip for p in c]
    held_out: list[float] = []
    if len(groups) >= 2:
        for i, group in enumerate(groups):
            rest = np.concatenate([g for j, g in enumerate(groups) if j != i])
            held_out.extend(AnomalyParams.fit(rest).score_profiles(group).tolist())
    if not held_out:  # a single window: no held-out estimate, fall back to a fixed value
        return 3.0, held_out
    # held-out normal windows score about 1 (the mean squared z-score); the median keeps one odd
    # normal clip from lifting the threshold over the faults (MIMII fan: normal ~1, faults 3-9)
    return max(1.5, THRESHOLD_FACTOR * float(np.median(held_out))), held_out


def train_acoustic_model(
    normal: list[Path],
    abnormal: dict[str, list[Path]],
    name: str,
    build_dir: Path,
    *,
    progress: Progress | None = None,
    window_s: float | None = None,
    features: FeatureConfig | None = None,
) -> TrainingReport:
    """Train, export to ONNX and write the manifest (version 1) into ``build_dir``."""
    started = time.perf_counter()
    report_progress: Progress = progress or (lambda fraction, message: None)
    abnormal = {label: paths for label, paths in abnormal.items() if paths}
    if not normal:
        raise TrainingDataError("no normal clips given; an acoustic model needs recordings of good parts")
    labels = [NORMAL_LABEL, *sorted(abnormal)]
    if NORMAL_LABEL in abnormal:
        raise TrainingDataError(f"'{NORMAL_LABEL}' cannot be a fault label")

    report_progress(0.0, f"reading {len(normal) + sum(map(len, abnormal.values()))} clips")
    normal_clips, rate = _load_clips(normal)
    abnormal_clips: dict[str, list[npt.NDArray[np.float32]]] = {}
    for label, paths in abnormal.items():
        abnormal_clips[label], other_rate = _load_clips(paths)
        if other_rate != rate:
            raise TrainingDataError(f"'{label}' clips are at {other_rate} Hz, the normal clips at {rate} Hz")

    shortest = min(c.size for clips in [normal_clips, *abnormal_clips.values()] for c in clips) / rate
    window = round(window_s if window_s is not None else min(shortest, 10.0), 3)
    config = features or FeatureConfig.for_rate(rate)
    if config.sample_rate != rate:
        raise TrainingDataError(f"feature config is for {config.sample_rate} Hz but the clips are {rate} Hz")
    extractor = LogMelExtractor(config)
    if window * rate < config.n_fft:
        raise TrainingDataError(f"clips of {shortest:.3f} s are too short for features (n_fft {config.n_fft})")

    def profiles_of(clips: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float64]]:
        return [np.stack([spectral_profile(extractor(w)) for w in split_windows(c, rate, window)]) for c in clips]

    report_progress(0.2, "computing features")
    normal_profiles = profiles_of(normal_clips)
    abnormal_profiles = {label: profiles_of(clips) for label, clips in abnormal_clips.items()}
    n_windows = sum(len(p) for p in normal_profiles) + sum(len(p) for ps in abnormal_profiles.values() for p in ps)

    report_progress(0.6, "fitting the model")
    metrics: dict[str, Any] = {"windows": n_windows}
    model: onnx.ModelProto
    if not abnormal:
        params = AnomalyParams.fit(np.concatenate(normal_profiles))
        threshold, held_out = _anomaly_threshold(normal_profiles)
        metrics["held_out_normal_scores"] = [round(s, 4) for s in held_out]
        model = anomaly_onnx(params)
        kind, outputs, model_labels = "acoustic-anomaly", {"score": "score"}, [NORMAL_LABEL, ANOMALOUS_LABEL]
        params_info: dict[str, Any] = {"model": "spectral-profile z-score", "shrink": 3.0, "floor": 0.05}
    else:
        x = np.concatenate([*normal_profiles, *(p for ps in abnormal_profiles.values() for p in ps)])
        y = np.concatenate(
            [np.zeros(sum(len(p) for p in normal_profiles), dtype=np.int64)]
            + [np.full(sum(len(p) for p in abnormal_profiles[label]), i + 1, dtype=np.int64)
               for i, label in enumerate(labels[1:])]
        )
        classifier = ClassifierParams.fit(x, y, len(labels))
        metrics["train_accuracy"] = float(np.mean(classifier.probabilities_of_profiles(x).argmax(axis=1) == y))
        model = classifier_onnx(classifier)
        threshold = 0.5  # score = 1 - P(normal)
        kind, outputs, model_labels = "acoustic-classifier", {"probabilities": "probabilities"}, labels
        params_info = {"model": "logistic regression on spectral profiles", "C": 1.0}

    report_progress(0.9, "writing the model")
    build_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = build_dir / ONNX_FILE
    onnx.save(model, str(onnx_path))
    n_clips = {NORMAL_LABEL: len(normal), **{label: len(paths) for label, paths in abnormal.items()}}
    duration = time.perf_counter() - started
    manifest = Manifest(
        name=name,
        version=1,
        kind=kind,
        description=f"{'Normal-only anomaly' if not abnormal else 'Fault-type'} sound model trained on "
        + ", ".join(f"{count} {label}" for label, count in n_clips.items())
        + " clips",
        onnx_sha256=sha256_of(onnx_path),
        input=AudioInput(sample_rate=rate, window_s=window, features=config.to_dict()),
        outputs=outputs,
        labels=model_labels,
        ok_labels=[NORMAL_LABEL],
        threshold=threshold,
        metrics=metrics,
        training=TrainingInfo(
            data={"clips": n_clips, "folders": sorted({str(Path(p).parent) for p in normal})},
            duration_s=round(duration, 3),
            tool="acoustic.training.train_acoustic_model",
            params=params_info,
        ),
    )
    write_manifest(build_dir, manifest)
    report_progress(1.0, "done")
    return TrainingReport(manifest, build_dir, onnx_path, n_clips, n_windows, duration, metrics)
