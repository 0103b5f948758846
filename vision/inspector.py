"""Judge one decoded image with one vision model: preprocess, run, decide, keep the heat map."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.decision import judge_outputs
from models.manifest import ImageInput
from models.runtime import LoadedModel
from vision.preprocess import to_tensor


@dataclass(frozen=True)
class VisionResult:
    decision: str
    label: str
    score: float
    threshold: float
    model_name: str
    model_version: int
    anomaly_map: npt.NDArray[np.float32] | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class VisionInspector:
    def __init__(self, model: LoadedModel, threshold: float | None = None) -> None:
        if not isinstance(model.manifest.input, ImageInput) or model.manifest.modality != "vision":
            raise ValueError(f"model '{model.name}' is a {model.manifest.kind} model, not a vision model")
        self.model = model
        self.spec: ImageInput = model.manifest.input
        self.threshold = model.manifest.threshold if threshold is None else threshold

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    def judge(self, pixels: npt.NDArray[np.uint8]) -> VisionResult:
        started = time.perf_counter()
        tensor = to_tensor(pixels, self.spec)
        prepared = time.perf_counter()
        outputs = self.model.run(tensor)
        ran = time.perf_counter()
        judgement = judge_outputs(self.model.manifest, outputs, self.threshold)
        anomaly_map = outputs.get("anomaly_map")
        heat = None if anomaly_map is None else np.asarray(anomaly_map, dtype=np.float32).reshape(
            anomaly_map.shape[-2:])
        return VisionResult(
            judgement.decision, judgement.label, judgement.score, judgement.threshold, self.name, self.version, heat,
            {"preprocess": (prepared - started) * 1000.0, "model": (ran - prepared) * 1000.0,
             "decide": (time.perf_counter() - ran) * 1000.0},
        )
