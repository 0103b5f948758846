"""The candidate against the running model on the same held-back samples, through the station's own
judging path (edge.site_calibration.score_images) and the figures of edge.model_compare: false rejects,
misses per defect type, AUROC, the parts they disagree on; plus what the page draws: score histograms
with each threshold, and each version's threshold curve (false-reject and miss rates per threshold)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.config import StationConfig
from edge.inspection import JudgeOptions, quality_limits
from edge.model_compare import disagreements, version_summary
from edge.model_manager import ModelManager
from edge.site_calibration import JudgedFiles, error_rates, score_images
from edge.workbench.samples import GOOD
from models.registry import ModelRegistry

HISTOGRAM_BINS = 20
CURVE_POINTS = 101


def judge(registry: ModelRegistry, config: StationConfig, name: str, version: int,
          files: dict[str, list[Path]]) -> JudgedFiles:
    """One version's scores of the held-back files: ``files`` maps 'good' and each defect label to images."""
    manager = ModelManager(registry, 1, config.models.thresholds)
    inspector = manager.load_vision(name, version)
    options = JudgeOptions(model=name, quality=quality_limits(config.quality))
    max_pixels = int(config.api.max_image_megapixels * 1_000_000)
    return JudgedFiles(version, inspector.threshold, score_images(inspector, files.get(GOOD, []), options, max_pixels),
                       {label: score_images(inspector, paths, options, max_pixels)
                        for label, paths in sorted(files.items()) if label != GOOD})


def histogram(judged: JudgedFiles) -> dict[str, Any]:
    good, defects = judged.good.scores, judged.defect_scores()
    values = [*good, *defects, judged.threshold]
    low, high = min(values), max(values)
    if high <= low:
        high = low + 1e-6
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    return {"edges": [float(e) for e in edges], "threshold": judged.threshold,
            "good": [int(c) for c in np.histogram(good, edges)[0]],
            "defect": [int(c) for c in np.histogram(defects, edges)[0]]}


def threshold_curve(judged: JudgedFiles) -> list[dict[str, float | None]]:
    """False-reject and miss rates at thresholds spread over the scores (each one a score, so every step
    of the rates is on the curve when there are fewer than CURVE_POINTS scores), rising."""
    good, defects = judged.good.scores, judged.defect_scores()
    scores = np.unique(np.asarray([*good, *defects, judged.threshold], dtype=np.float64))
    if len(scores) > CURVE_POINTS:
        scores = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, CURVE_POINTS)))
    return [{"threshold": float(t), **error_rates(good, defects, float(t))} for t in scores]


def compare(registry: ModelRegistry, config: StationConfig, name: str, running: int, candidate: int,
            held_out: dict[str, list[tuple[int, Path]]]) -> dict[str, Any]:
    """Both versions judge the held-back samples (``held_out``: label -> [(verdict id, image)]); the parts
    they disagree on are named by verdict id (their images: GET /api/v1/verdicts/{id}/image)."""
    files = {label: [path for _, path in items] for label, items in held_out.items()}
    verdict_of = {str(path): verdict_id for items in held_out.values() for verdict_id, path in items}
    judged = [judge(registry, config, name, version, files) for version in (running, candidate)]
    differing = disagreements(*judged)
    return {
        "model": name, "running_version": running, "candidate_version": candidate,
        "candidate_running": registry.active_version(name) == candidate,
        "held_out": {label: len(items) for label, items in held_out.items()},
        "versions": [{**version_summary(j, j.version == running), "histogram": histogram(j),
                      "curve": threshold_curve(j), "false_rejects": _count_at(j.good.scores, j.threshold, True),
                      "misses_by_label": {label: _count_at(s.scores, j.threshold, False)
                                          for label, s in j.defects.items()}}
                     for j in judged],
        "disagreements": [{"verdict_id": verdict_of.get(item["path"]), "expected": item["expected"],
                           "running": item[f"v{running}"], "candidate": item[f"v{candidate}"]}
                          for item in differing],
    }


def _count_at(scores: list[float], threshold: float, above: bool) -> int:
    values = np.asarray(scores, dtype=np.float64)
    return int(np.count_nonzero(values >= threshold if above else values < threshold))


def rates_at(curve: list[dict[str, float | None]], threshold: float) -> dict[str, float | None]:
    """The false-reject and miss rates a threshold gives, read off a curve holding every score (the rates
    change only at a score: the first point at or above ``threshold`` has them)."""
    for point in curve:
        if point["threshold"] is not None and point["threshold"] >= threshold:
            return {"threshold": threshold, "false_reject_rate": point["false_reject_rate"],
                    "miss_rate": point["miss_rate"]}
    last = curve[-1] if curve else {}
    return {"threshold": threshold, "false_reject_rate": 0.0 if last.get("false_reject_rate") is not None else None,
            "miss_rate": 1.0 if last.get("miss_rate") is not None else None}
