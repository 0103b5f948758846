"""Site calibration: set a model's threshold from parts judged at the station.

A threshold chosen at training can only come from the training data itself, and on real lines
new parts score higher than those (the same part photographed twice, lighting drift, a new
supplier). A technician therefore confirms it on site: the active version judges a folder of good
parts (or normal sound clips) it has never seen, and a new registry version with the same ONNX and
a threshold from those scores is registered, so promote and rollback work as usual. Defect files,
when given, are judged too and show the misses the new threshold costs against the old one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.inspection import JudgeOptions, evaluate
from models.evaluation import OperatingPoint, Target, operating_point_summary, threshold_for_false_reject
from models.manifest import Manifest
from models.registry import ModelRegistry, ModelVersion
from vision.images import ImageError, read_image_file
from vision.inspector import VisionInspector

if TYPE_CHECKING:
    from acoustic.inspector import AcousticInspector

MIN_GOOD_IMAGES = 20  # fewer cannot place a threshold at a few per cent of false rejects
TOOL = "edge-inspect models calibrate"


@dataclass
class ScoredFiles:
    scores: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # of the scores, in order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def add(self, path: Path, score: float | None, reason: str | None) -> None:
        if score is None:
            self.skipped.append((str(path), reason or "not judged"))
        else:
            self.scores.append(score)
            self.paths.append(str(path))


@dataclass
class JudgedFiles:
    """One version's scores of the good files and of each defect folder."""

    version: int
    threshold: float
    good: ScoredFiles
    defects: dict[str, ScoredFiles]

    def defect_scores(self) -> list[float]:
        return [score for scored in self.defects.values() for score in scored.scores]

    def skipped(self) -> list[tuple[str, str]]:
        return self.good.skipped + [item for scored in self.defects.values() for item in scored.skipped]

    def decisions(self) -> dict[str, tuple[str, str]]:
        """path -> (expected decision, this version's decision)."""
        result = {}
        for expected, scored in [("OK", self.good), *(("NG", s) for s in self.defects.values())]:
            for path, score in zip(scored.paths, scored.scores, strict=True):
                result[path] = (expected, "NG" if score >= self.threshold else "OK")
        return result


def score_images(inspector: VisionInspector, files: list[Path], options: JudgeOptions,
                 max_pixels: int) -> ScoredFiles:
    """Scores of the images the station would judge; unreadable ones and ones the quality gate
    refuses are skipped with their reason (they would never be judged on the line either)."""
    scored = ScoredFiles()
    for path in files:
        try:
            image = read_image_file(path, max_pixels)
        except ImageError as exc:
            scored.skipped.append((str(path), str(exc)))
            continue
        result, _ = evaluate(inspector, image.pixels, options)
        scored.add(path, result.score, result.reason)
    return scored


def score_clips(inspector: AcousticInspector, files: list[Path]) -> ScoredFiles:
    """Scores of WAV files, judged whole as ``predict acoustic`` judges them; unreadable clips and
    ones the input checks refuse (silence, clipping, wrong rate or length) are skipped with why."""
    from acoustic.training import read_wav

    scored = ScoredFiles()
    for path in files:
        try:
            waveform, rate = read_wav(path)
        except (OSError, ValueError, RuntimeError) as exc:
            scored.skipped.append((str(path), str(exc)))
            continue
        result = inspector.judge(waveform, rate)
        scored.add(path, result.score, result.reason)
    return scored


def error_rates(good: list[float], defects: list[float], threshold: float) -> dict[str, float | None]:
    """False rejects among the good parts and misses among the defect parts at ``threshold``."""
    return {"false_reject_rate": float(np.mean(np.asarray(good) >= threshold)) if good else None,
            "miss_rate": float(np.mean(np.asarray(defects) < threshold)) if defects else None}


def site_operating_point(good: list[float], false_reject: float, defects: list[float] | None = None,
                         parts: str = "good parts") -> OperatingPoint:
    """The lowest threshold (so the fewest misses) whose expected false rejects on new parts stay within
    ``false_reject``, by the same rule as at training (models.evaluation.threshold_for_false_reject);
    defect parts only report the misses it costs."""
    if len(good) < MIN_GOOD_IMAGES:
        raise ValueError(f"site calibration needs at least {MIN_GOOD_IMAGES} judged good files, got {len(good)}")
    return threshold_for_false_reject(good, false_reject, defects or [], parts)


def site_threshold(good: list[float], false_reject: float) -> float:
    """The threshold of site_operating_point."""
    return site_operating_point(good, false_reject).threshold


def register_calibrated(registry: ModelRegistry, source: ModelVersion, manifest: Manifest, threshold: float,
                        summary: dict[str, Any], promote: bool,
                        point: OperatingPoint | None = None) -> ModelVersion:
    """A new version of the model: the source's files, the new threshold, the calibration in its metrics
    (and ``point``, from parts it never saw, as its operating point)."""
    metrics = {**manifest.metrics, "site_calibration": {**summary, "tool": TOOL, "from_version": source.version,
                                                        "previous_threshold": manifest.threshold,
                                                        "at": datetime.now(UTC).isoformat()}}
    if point is not None:
        metrics["operating_point"] = operating_point_summary(point, Target(false_reject=point.target_rate)) | {
            "from": "site calibration"}
    training = manifest.training.model_copy(update={"parent_version": source.version})
    calibrated = manifest.model_copy(update={"threshold": threshold, "metrics": metrics, "training": training,
                                             "created_at": datetime.now(UTC)})
    return registry.register(source.folder, calibrated, promote=promote)
