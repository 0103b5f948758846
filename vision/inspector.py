"""Judge one decoded image with one vision model: preprocess, run, decide, keep the heat map."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from models.decision import Decision, judge_outputs
from models.manifest import ImageInput, Manifest
from models.runtime import LoadedModel
from vision.heatmap import heatmap_image, locate_defect
from vision.preprocess import to_tensor
from vision.quality import QualityLimits, assess


@dataclass(frozen=True)
class VisionResult:
    decision: Decision  # INVALID: not judged, see reason
    label: str
    score: float | None
    threshold: float
    model_name: str
    model_version: int
    anomaly_map: npt.NDArray[np.float32] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    quality: dict[str, float | str | None] | None = None
    # Where the defect is on an NG part (vision.heatmap.locate_defect: fractions of the image), and the
    # judged image's (width, height): one call gives the service everything it stores
    defect_region: dict[str, float] | None = None
    image_size: tuple[int, int] | None = None

    def heatmap(self, size: tuple[int, int] | None = None) -> npt.NDArray[np.uint8] | None:
        """The colour heat map (BGR, threshold at mid-scale) laid out at ``size`` (width, height), by
        default the judged part's own size and aspect, so it lies over the part; None without a map."""
        if self.anomaly_map is None:
            return None
        return heatmap_image(self.anomaly_map, self.threshold, size or self.image_size)


@dataclass(frozen=True)
class MinimumSize:
    width: int
    height: int
    basis: str  # where the bound comes from, for the message


def minimum_image_size(manifest: Manifest) -> MinimumSize:
    """The smallest image a model judges: a quarter of its training images' median width and height
    (an eighth of its input size for models that did not record them), and never under 8 px.

    Scaled up to the model's input, a far smaller image is a blur the model never saw: its score
    says nothing about the part, so such an image is not judged."""
    size = manifest.training.data.get("image_size")
    if size:
        return MinimumSize(max(8, math.ceil(size["median_width"] / 4)), max(8, math.ceil(size["median_height"] / 4)),
                           f"a quarter of its training images' median size, {size['median_width']}x"
                           f"{size['median_height']} px")
    spec = manifest.input
    assert isinstance(spec, ImageInput)
    return MinimumSize(max(8, spec.width // 8), max(8, spec.height // 8),
                       f"an eighth of its input size, {spec.width}x{spec.height} px")


class VisionInspector:
    def __init__(self, model: LoadedModel, threshold: float | None = None) -> None:
        if not isinstance(model.manifest.input, ImageInput) or model.manifest.modality != "vision":
            raise ValueError(f"model '{model.name}' is a {model.manifest.kind} model, not a vision model")
        self.model = model
        self.spec: ImageInput = model.manifest.input
        self.threshold = model.manifest.threshold if threshold is None else threshold
        self.minimum_size = minimum_image_size(model.manifest)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version

    def judge(self, pixels: npt.NDArray[np.uint8], threshold: float | None = None,
              quality: QualityLimits | None = None) -> VisionResult:
        """Judge one image; with ``quality`` limits a frame unfit to judge is INVALID, not OK or NG."""
        started = time.perf_counter()
        report = None
        problem = self._size_problem(pixels)
        if problem is None and quality is not None:
            report = assess(pixels, quality)
            problem = report.problem
        if problem is not None:
            return VisionResult("INVALID", "invalid", None, self.threshold if threshold is None else threshold,
                                self.name, self.version, None, {"quality": (time.perf_counter() - started) * 1000.0},
                                problem, None if report is None else report.as_dict())
        checked = time.perf_counter()
        tensor = to_tensor(pixels, self.spec)
        prepared = time.perf_counter()
        outputs = self.model.run(tensor)
        ran = time.perf_counter()
        judgement = judge_outputs(self.model.manifest, outputs, self.threshold if threshold is None else threshold)
        anomaly_map = outputs.get("anomaly_map")
        heat = None if anomaly_map is None else np.asarray(anomaly_map, dtype=np.float32).reshape(
            anomaly_map.shape[-2:])
        region = (locate_defect(heat, judgement.threshold)
                  if heat is not None and judgement.decision == "NG" else None)
        return VisionResult(
            judgement.decision, judgement.label, judgement.score, judgement.threshold, self.name, self.version, heat,
            {"quality": (checked - started) * 1000.0, "preprocess": (prepared - checked) * 1000.0,
             "model": (ran - prepared) * 1000.0, "decide": (time.perf_counter() - ran) * 1000.0},
            quality=None if report is None else report.as_dict(), defect_region=region,
            image_size=(int(pixels.shape[1]), int(pixels.shape[0])),
        )

    def _size_problem(self, pixels: npt.NDArray[np.uint8]) -> str | None:
        height, width = pixels.shape[:2]
        least = self.minimum_size
        if width >= least.width and height >= least.height:
            return None
        return (f"image too small: {width}x{height} px, model '{self.name}' judges images of at least "
                f"{least.width}x{least.height} px ({least.basis})")
