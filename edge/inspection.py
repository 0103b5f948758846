"""The inspection path shared by the API, camera/replay sources and the offline CLI:
decode -> judge (one call: decision, score, map, defect box) -> archive -> store. Bad input raises
before anything is stored."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge.archive import FileContent, ImageArchive
from edge.config import QualitySettings
from edge.metrics import StationMetrics
from edge.model_manager import ModelManager
from edge.store import NewVerdict, PartContext, StoredVerdict, VerdictStore
from vision.images import ImageError, decode_image
from vision.inspector import VisionInspector, VisionResult
from vision.quality import QualityLimits

if TYPE_CHECKING:
    from acoustic.inspector import AcousticInspector, AcousticResult
    from edge.workbench.samples import NearThresholdSampler

log = logging.getLogger(__name__)
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp", "TIFF": "tif"}


class WrongModelKindError(ValueError):
    """A model named for a modality it does not judge (a sound model for an image, ...)."""


@dataclass(frozen=True)
class Inspection:
    """A judged input and the Future of its stored verdict."""

    result: VisionResult | None  # None for a verdict that is not a vision one
    verdict: NewVerdict
    stored: Future[StoredVerdict]
    started: float
    files_written: Future[None] | None = None
    committing: float = 0.0  # when it was handed to the store (perf_counter)

    def response(self, stored: StoredVerdict) -> dict[str, Any]:
        v = self.verdict
        return {
            "id": stored.verdict_id, "part_id": stored.part_id, "serial": stored.serial,
            "batch_id": stored.batch_id, "decision": v.decision, "label": v.label, "score": v.score,
            "threshold": v.threshold, "model": {"name": v.model_name, "version": v.model_version},
            "latency_ms": round((time.perf_counter() - self.started) * 1000.0, 3),
            "inference_ms": round(self.result.timings_ms.get("model", 0.0), 3) if self.result else None,
            "defect_region": v.details.get("defect_region"), "reason": v.reason, "created_at": stored.created_at,
        }


@dataclass(frozen=True)
class JudgeOptions:
    """How one input is judged: by which model, threshold and quality gate, under which recipe."""

    model: str | None = None
    threshold: float | None = None
    quality: QualityLimits | None = None
    recipe: str | None = None


def quality_limits(settings: QualitySettings | None) -> QualityLimits | None:
    if settings is None or not settings.enabled:
        return None
    return QualityLimits(settings.min_mean, settings.max_mean, settings.max_saturated_fraction,
                         settings.min_contrast, settings.min_sharpness)


def evaluate(inspector: VisionInspector, pixels: npt.NDArray[np.uint8],
             options: JudgeOptions = JudgeOptions()) -> tuple[VisionResult, dict[str, Any]]:
    """Judge pixels in one call to the model (decision, score, map and defect box together) and gather
    what a verdict keeps of it; stores nothing (the offline CLI stops here)."""
    result = inspector.judge(pixels, options.threshold, options.quality)
    details: dict[str, Any] = {"width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
    if result.quality is not None:
        details["quality"] = result.quality
    if result.defect_region is not None:
        details["defect_region"] = result.defect_region
    return result, details


class InspectionService:
    def __init__(self, models: ModelManager, store: VerdictStore, archive: ImageArchive, metrics: StationMetrics,
                 default_model: str, max_pixels: int, quality: QualityLimits | None = None) -> None:
        self.models = models
        self.store = store
        self.archive = archive
        self.metrics = metrics
        self.default_model = default_model
        self.max_pixels = max_pixels
        self.quality = quality
        self.sampler: NearThresholdSampler | None = None  # keeps near-threshold parts as samples

    def options(self, model: str | None = None) -> JudgeOptions:
        """The station's defaults: its model and quality gate."""
        return JudgeOptions(model=model or self.default_model, quality=self.quality)

    def judge_bytes(self, data: bytes, part: PartContext, model: str | None = None) -> Inspection:
        started = time.perf_counter()
        options = self.options(model)
        self.vision_inspector(options.model or self.default_model)  # an unknown model fails before decoding
        try:
            image = decode_image(data, self.max_pixels)
        except ImageError as exc:
            self.metrics.rejected_inputs.labels(exc.reason).inc()
            raise
        self.metrics.stage_latency.labels("decode").observe(time.perf_counter() - started)
        return self._judge(image.pixels, part, options, started, original=(data, _EXTENSIONS.get(image.format, "img")))

    def judge_pixels(self, pixels: npt.NDArray[np.uint8], part: PartContext, options: JudgeOptions | None = None,
                     late: bool = False, actuated: str | None = None) -> Inspection:
        return self._judge(pixels, part, options or self.options(), time.perf_counter(), None, late, actuated)

    def vision_inspector(self, name: str) -> VisionInspector:
        """The loaded vision model ``name`` (UnknownModelError; WrongModelKindError for a sound model)."""
        try:
            return self.models.vision(name)
        except ValueError as exc:
            raise WrongModelKindError(str(exc)) from exc

    def acoustic_inspector(self, name: str) -> AcousticInspector:
        """The loaded acoustic model ``name`` (UnknownModelError; WrongModelKindError for an image model)."""
        try:
            return self.models.acoustic(name)
        except ValueError as exc:
            raise WrongModelKindError(str(exc)) from exc

    def evaluate(self, pixels: npt.NDArray[np.uint8], options: JudgeOptions) -> tuple[VisionResult, dict[str, Any]]:
        result, details = evaluate(self.vision_inspector(options.model or self.default_model), pixels, options)
        for stage in ("quality", "model"):
            if stage in result.timings_ms:
                self.metrics.stage_latency.labels(stage).observe(result.timings_ms[stage] / 1000.0)
        return result, details

    def prepare_pixels(self, pixels: npt.NDArray[np.uint8], options: JudgeOptions) -> NewVerdict:
        """Judge and archive, but leave storing to the caller (a part judged by several modalities)."""
        started = time.perf_counter()
        result, details = self.evaluate(pixels, options)
        image_path, heatmap_path, _ = self._archive(result, pixels, None)
        return self._vision_verdict(result, details, options, started, image_path, heatmap_path, False, None)

    def _archive(self, result: VisionResult, pixels: npt.NDArray[np.uint8],
                 original: tuple[bytes, str] | None) -> tuple[Path | None, Path | None, Future[None] | None]:
        """Reserve the image (and, for NG, heat map) files the policy keeps, and queue their writing (an OK
        image not written now is held in memory, as it is, under its reserved path); returns both paths and the
        Future of the writes."""
        sampled = self.sampler is not None and self.sampler.choose(result.score, result.threshold)
        if not sampled and not self.archive.wants(result.decision):
            return None, None, None
        extension = original[1] if original is not None else "png"
        content = original[0] if original is not None else pixels
        if not sampled and self.archive.held_only(result.decision):
            return self.archive.hold(extension, content), None, None
        image_path = self.archive.reserve(extension)
        if sampled and self.sampler is not None:
            self.sampler.expect(self.archive.ref(image_path))
        files: list[tuple[Path, FileContent]] = []
        if image_path is not None:
            files.append((image_path, content))
        heatmap_path = None
        if result.anomaly_map is not None and result.decision == "NG":
            heatmap_path = self.archive.reserve("png")
            if heatmap_path is not None:  # rendered at the part's own size by the archive's writer, off this path
                files.append((heatmap_path, result.heatmap))
        return image_path, heatmap_path, self.archive.write_later(files) if files else None

    def _vision_verdict(self, result: VisionResult, details: dict[str, Any], options: JudgeOptions, started: float,
                        image_path: Path | None, heatmap_path: Path | None, late: bool,
                        actuated: str | None) -> NewVerdict:
        return NewVerdict(
            modality="vision", decision=result.decision,
            label=result.label, score=result.score, threshold=result.threshold, model_name=result.model_name,
            model_version=result.model_version, latency_ms=(time.perf_counter() - started) * 1000.0,
            reason=result.reason, image_ref=self.archive.ref(image_path), heatmap_ref=self.archive.ref(heatmap_path),
            details=details, recipe=options.recipe, actuated=actuated or result.decision, late=late,
        )

    def prepare_audio(self, waveform: npt.NDArray[np.floating[Any]], sample_rate: int, model: str,
                      recipe: str | None = None) -> NewVerdict:
        """Judge a recording (INVALID with the reason for silence, clipping, a wrong rate, a dead device)."""
        started = time.perf_counter()
        inspector = self.acoustic_inspector(model)
        result = inspector.judge(waveform, sample_rate)
        return self.acoustic_verdict(result, inspector, started, len(waveform) / sample_rate, sample_rate, recipe)

    def acoustic_verdict(self, result: AcousticResult, inspector: AcousticInspector, started: float,
                         seconds: float, sample_rate: int, recipe: str | None = None) -> NewVerdict:
        self.metrics.stage_latency.labels("acoustic").observe(time.perf_counter() - started)
        details: dict[str, Any] = {"sample_rate": sample_rate, "seconds": round(seconds, 3),
                                   "timings_ms": result.timings}
        if result.probabilities:
            details["probabilities"] = result.probabilities
        return NewVerdict(
            modality="acoustic", decision=result.decision,
            label=result.label or ("invalid" if result.decision == "INVALID" else result.decision.lower()),
            score=result.score, threshold=result.threshold, model_name=inspector.model.name,
            model_version=inspector.model.version, latency_ms=(time.perf_counter() - started) * 1000.0,
            reason=result.reason, details=details, recipe=recipe,
        )

    def judge_audio(self, waveform: npt.NDArray[np.floating[Any]], sample_rate: int, part: PartContext,
                    model: str) -> Inspection:
        started = time.perf_counter()
        verdict = self.prepare_audio(waveform, sample_rate, model)
        committing = time.perf_counter()
        return Inspection(None, verdict, self.store.record(part, [verdict]), started, committing=committing)

    def _judge(self, pixels: npt.NDArray[np.uint8], part: PartContext, options: JudgeOptions, started: float,
               original: tuple[bytes, str] | None, late: bool = False, actuated: str | None = None) -> Inspection:
        result, details = self.evaluate(pixels, options)
        image_path, heatmap_path, written = self._archive(result, pixels, original)  # written during the commit
        verdict = self._vision_verdict(result, details, options, started, image_path, heatmap_path, late, actuated)
        committing = time.perf_counter()
        return Inspection(result, verdict, self.store.record(part, [verdict]), started, written, committing)

    def observe_stored(self, inspection: Inspection, source: str) -> None:
        v = inspection.verdict
        now = time.perf_counter()
        self.metrics.stage_latency.labels("store_commit").observe(now - inspection.committing)
        self.metrics.verdicts.labels(v.modality, v.decision, v.model_name or "").inc()
        self.metrics.verdict_latency.labels(v.modality, source).observe(now - inspection.started)
