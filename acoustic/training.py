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
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx

from acoustic.anomaly_model import AnomalyParams, anomaly_onnx
from acoustic.classifier_model import ClassifierParams, classifier_onnx
from acoustic.features import FeatureConfig, LogMelExtractor
from acoustic.profile import spectral_profile, window_level
from models.evaluation import Target, choose_operating_point, operating_point_summary
from models.manifest import ONNX_FILE, AudioInput, Manifest, TrainingInfo, sha256_of, write_manifest

Progress = Callable[[float, str], None]
NORMAL_LABEL = "normal"
ANOMALOUS_LABEL = "anomalous"
SINGLE_WINDOW_THRESHOLD = 3.0  # normal windows score about 1; used only when nothing can be held out


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


def _held_out_scores(profiles_by_clip: list[npt.NDArray[np.float64]],
                     levels_by_clip: list[npt.NDArray[np.float64]] | None) -> list[float]:
    """Normal scores as a new clip would get them: each clip scored by a model fitted without it (each
    window, when there are fewer than 3 clips); empty for a single window."""
    levels: list[npt.NDArray[np.float64] | None] = (
        list(levels_by_clip) if levels_by_clip is not None else [None] * len(profiles_by_clip))
    groups: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64] | None]]
    if len(profiles_by_clip) >= 3:
        groups = list(zip(profiles_by_clip, levels, strict=True))
    else:
        groups = [(clip[i:i + 1], None if lv is None else lv[i:i + 1])
                  for clip, lv in zip(profiles_by_clip, levels, strict=True) for i in range(len(clip))]
    held_out: list[float] = []
    if len(groups) >= 2:
        for i, (profiles, own_levels) in enumerate(groups):
            rest = np.concatenate([g[0] for j, g in enumerate(groups) if j != i])
            rest_levels = None if levels_by_clip is None else np.concatenate(
                [g[1] for j, g in enumerate(groups) if j != i and g[1] is not None])
            held_out.extend(AnomalyParams.fit(rest, levels=rest_levels).score_profiles(profiles, own_levels).tolist())
    return held_out


def train_acoustic_model(
    normal: list[Path],
    abnormal: dict[str, list[Path]],
    name: str,
    build_dir: Path,
    *,
    progress: Progress | None = None,
    window_s: float | None = None,
    features: FeatureConfig | None = None,
    level: Literal["use", "ignore"] = "use",
    target: Target | None = None,
) -> TrainingReport:
    """Train, export to ONNX and write the manifest (version 1) into ``build_dir``.

    ``level``: "use" where the microphone has a fixed gain and place (a change in loudness is then
    evidence), "ignore" for a portable or re-gained one (normal-only models; see acoustic.anomaly_model).
    ``target``: the operating point the threshold is set for (models.evaluation.Target; default at
    most 5 % of normal clips rejected), from held-out normal clips."""
    if level not in ("use", "ignore"):
        raise TrainingDataError(f"level must be 'use' or 'ignore', not {level!r}")
    target = target or Target()
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

    def levels_of(clips: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float64]]:
        return [np.asarray([window_level(extractor(w)) for w in split_windows(c, rate, window)]) for c in clips]

    report_progress(0.2, "computing features")
    normal_profiles = profiles_of(normal_clips)
    abnormal_profiles = {label: profiles_of(clips) for label, clips in abnormal_clips.items()}
    n_windows = sum(len(p) for p in normal_profiles) + sum(len(p) for ps in abnormal_profiles.values() for p in ps)

    report_progress(0.6, "fitting the model")
    metrics: dict[str, Any] = {"windows": n_windows}
    model: onnx.ModelProto
    if not abnormal:
        normal_levels = levels_of(normal_clips) if level == "use" else None
        params = AnomalyParams.fit(np.concatenate(normal_profiles),
                                   levels=None if normal_levels is None else np.concatenate(normal_levels))
        held_out = _held_out_scores(normal_profiles, normal_levels)
        metrics["held_out_normal_scores"] = [round(s, 4) for s in held_out]
        if held_out:
            point = choose_operating_point(held_out, [], target, parts="normal clips")
            threshold = point.threshold
            metrics["operating_point"] = operating_point_summary(point, target)
        else:  # a single window: nothing held out to set it from
            threshold = SINGLE_WINDOW_THRESHOLD
            metrics["operating_point"] = {"target": {"false_reject": target.false_reject, "miss": target.miss,
                                                     "text": target.describe()},
                                          "threshold": threshold, "supported": False,
                                          "warning": "one window of normal sound holds nothing out: the threshold "
                                                     "is a fixed guess; record more normal clips"}
        model = anomaly_onnx(params)
        kind, outputs, model_labels = "acoustic-anomaly", {"score": "score"}, [NORMAL_LABEL, ANOMALOUS_LABEL]
        params_info: dict[str, Any] = {"model": "spectral-profile z-score", "shrink": 3.0, "floor": 0.05,
                                       "level": level}
        if params.uses_level:
            params_info |= {"level_mean": round(params.level_mean, 5), "level_scale": round(params.level_scale, 5),
                            "level_weight": params.level_weight}
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
        params_info = {"model": "logistic regression on spectral profiles", "C": 1.0,
                       "level": "ignore (the classifier judges the spectrum's shape)"}

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
