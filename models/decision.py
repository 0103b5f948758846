"""From a model's raw outputs to a decision, by the rule in its manifest (shared by all modalities)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.manifest import Manifest

Decision = Literal["OK", "NG", "INVALID"]
"""The one verdict decision of the project: OK, NG, or INVALID (not judged; the reason says why)."""
DECISIONS: tuple[Decision, ...] = ("OK", "NG", "INVALID")


@dataclass(frozen=True)
class Judgement:
    decision: Literal["OK", "NG"]
    label: str
    score: float  # higher = more likely defective / anomalous
    threshold: float


def judge_outputs(manifest: Manifest, outputs: dict[str, npt.NDArray[np.generic]],
                  threshold: float | None = None) -> Judgement:
    """Anomaly models: score >= threshold -> NG. Classifiers: score = 1 - P(ok labels)."""
    limit = manifest.threshold if threshold is None else threshold
    if manifest.is_anomaly:
        score = float(np.asarray(outputs["score"], dtype=np.float64).reshape(-1)[0])
        bad = score >= limit
        return Judgement("NG" if bad else "OK", manifest.labels[1] if bad else manifest.labels[0], score, limit)
    probabilities = np.asarray(outputs["probabilities"], dtype=np.float64).reshape(-1)
    if probabilities.size != len(manifest.labels):
        raise ValueError(f"model gave {probabilities.size} probabilities for {len(manifest.labels)} labels")
    ok_mask = np.array([label in manifest.ok_labels for label in manifest.labels])
    score = float(1.0 - probabilities[ok_mask].sum())
    if score >= limit:
        defect_probabilities = np.where(ok_mask, -1.0, probabilities)
        return Judgement("NG", manifest.labels[int(np.argmax(defect_probabilities))], score, limit)
    ok_probabilities = np.where(ok_mask, probabilities, -1.0)
    return Judgement("OK", manifest.labels[int(np.argmax(ok_probabilities))], score, limit)
