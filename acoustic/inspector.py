"""Judge audio with a loaded acoustic model: checks, features, ONNX, decision."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from acoustic.checks import InputLimits, check_input
from acoustic.features import FeatureConfig, LogMelExtractor, warm_up
from acoustic.sources import Clip
from models.decision import Decision
from models.manifest import AudioInput, ManifestError
from models.runtime import LoadedModel


@dataclass
class AcousticResult:
    decision: Decision
    label: str | None
    score: float | None  # higher = more anomalous (classifiers: 1 - P(ok labels))
    threshold: float
    reason: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # milliseconds
    probabilities: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "label": self.label,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
            "timings": self.timings,
            "probabilities": self.probabilities,
        }


class AcousticInspector:
    """Turns waveforms into verdicts with one model version; thread-safe for one caller at a time."""

    def __init__(self, model: LoadedModel, limits: InputLimits | None = None, warm: bool = True) -> None:
        spec = model.manifest.input
        if not isinstance(spec, AudioInput) or model.manifest.modality != "acoustic":
            raise ManifestError(f"model '{model.name}' is not an acoustic model (kind {model.manifest.kind})")
        self.model = model
        self.manifest = model.manifest
        self.spec = spec
        self.limits = limits or InputLimits()
        self.config = FeatureConfig.from_dict(spec.features, spec.sample_rate)
        self.extractor = LogMelExtractor(self.config)
        if warm:
            self.warm_up()

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @property
    def window_s(self) -> float:
        return self.spec.window_s

    def warm_up(self) -> None:
        """Compile numba and warm onnxruntime on a noise window of the model's length."""
        warm_up(self.config)
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(round(self.window_s * self.sample_rate)) * 0.01).astype(np.float32)
        for _ in range(2):
            self.model.run(self.extractor.tensor(noise))

    def judge_clip(self, clip: Clip) -> AcousticResult:
        if clip.error:
            return self._invalid(clip.error, {})
        return self.judge(clip.mono, clip.sample_rate)

    def judge(self, waveform: npt.NDArray[np.floating[Any]], sample_rate: int) -> AcousticResult:
        """One verdict for one window of audio (mono, or (samples, channels) which is averaged)."""
        started = time.perf_counter()
        signal = np.asarray(waveform, dtype=np.float32)
        if signal.ndim == 2:
            signal = signal.mean(axis=1, dtype=np.float32)
        reason = check_input(signal, sample_rate, self.sample_rate, self.window_s, self.limits)
        checked = time.perf_counter()
        if reason:
            return self._invalid(reason, {"checks_ms": (checked - started) * 1e3})
        tensor = self.extractor.tensor(signal)
        featured = time.perf_counter()
        outputs = self.model.run(tensor)
        done = time.perf_counter()
        timings = {
            "checks_ms": (checked - started) * 1e3,
            "features_ms": (featured - checked) * 1e3,
            "model_ms": (done - featured) * 1e3,
            "total_ms": (done - started) * 1e3,
        }
        return self._decide(outputs, timings)

    def _invalid(self, reason: str, timings: dict[str, float]) -> AcousticResult:
        return AcousticResult("INVALID", None, None, self.manifest.threshold, reason, timings)

    def _decide(self, outputs: dict[str, npt.NDArray[np.generic]], timings: dict[str, float]) -> AcousticResult:
        manifest = self.manifest
        if manifest.is_anomaly:
            score = float(np.asarray(outputs["score"]).reshape(-1)[0])
            anomalous = score >= manifest.threshold
            label = manifest.labels[1] if anomalous else manifest.labels[0]
            return AcousticResult("NG" if anomalous else "OK", label, score, manifest.threshold, None, timings)
        probabilities = np.asarray(outputs["probabilities"], dtype=np.float64).reshape(-1)
        by_label = {label: float(p) for label, p in zip(manifest.labels, probabilities, strict=True)}
        score = 1.0 - sum(by_label[label] for label in manifest.ok_labels)
        decision: Decision = "NG" if score >= manifest.threshold else "OK"
        # the label agrees with the decision: the likeliest fault when NG, the likeliest ok label when OK
        candidates = [label for label in manifest.labels if (label in manifest.ok_labels) == (decision == "OK")]
        label = max(candidates or manifest.labels, key=lambda name: by_label[name])
        return AcousticResult(decision, label, score, manifest.threshold, None, timings, by_label)
