"""Frame quality gate: frames a model must not judge (blank, saturated, dark, blurred) get a reason."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class QualityLimits:
    min_mean: float = 10.0  # below: under-exposed
    max_mean: float = 245.0  # above: over-exposed
    max_saturated_fraction: float = 0.4  # pixels at >= 250
    min_contrast: float = 2.0  # grey-level standard deviation; below: blank frame
    min_sharpness: float = 10.0  # variance of the Laplacian; below: badly blurred (0 disables)


@dataclass(frozen=True)
class QualityReport:
    mean: float
    contrast: float
    saturated_fraction: float
    sharpness: float
    problem: str | None  # None: fit to judge

    def as_dict(self) -> dict[str, float | str | None]:
        return {"mean": round(self.mean, 2), "contrast": round(self.contrast, 2),
                "saturated_fraction": round(self.saturated_fraction, 4), "sharpness": round(self.sharpness, 2),
                "problem": self.problem}


def assess(pixels: npt.NDArray[np.uint8], limits: QualityLimits) -> QualityReport:
    """Measure on a copy at most 512 px wide (a few hundred microseconds) and name the first problem."""
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    scale = 512 / max(grey.shape)
    if scale < 1:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    mean, std = cv2.meanStdDev(grey)
    mean_value, contrast = float(mean[0][0]), float(std[0][0])
    saturated = float(np.count_nonzero(grey >= 250)) / grey.size
    sharpness = float(cv2.Laplacian(grey, cv2.CV_32F).var())
    problem = None
    if mean_value < limits.min_mean:
        problem = f"under-exposed (mean grey {mean_value:.1f} < {limits.min_mean})"
    elif mean_value > limits.max_mean:
        problem = f"over-exposed (mean grey {mean_value:.1f} > {limits.max_mean})"
    elif contrast < limits.min_contrast:
        problem = f"blank frame (contrast {contrast:.1f} < {limits.min_contrast})"
    elif saturated > limits.max_saturated_fraction:
        problem = f"saturated ({saturated:.0%} of pixels at full scale > {limits.max_saturated_fraction:.0%})"
    elif limits.min_sharpness > 0 and sharpness < limits.min_sharpness:
        problem = f"badly blurred (sharpness {sharpness:.1f} < {limits.min_sharpness})"
    return QualityReport(mean_value, contrast, saturated, sharpness, problem)
