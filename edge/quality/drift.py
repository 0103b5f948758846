"""Model governance: the scores of the day's good parts against what the model's calibration saw.

A model's manifest keeps the median score of the good parts it was calibrated on
(``calibration_good_score_median``) and the false-reject rate its threshold was set for
(``calibration_false_reject_rate``). When the median of today's OK scores moves by more than the
tolerance, or the NG rate is far above that false-reject rate, the inputs no longer look like the
training data (lighting, a new supplier, a dirty lens) even while parts still pass."""

from __future__ import annotations

import math
import sqlite3
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from models.manifest import Manifest, ManifestError

MIN_PARTS = 30  # fewer good parts than this: no verdict on drift
MAX_POINTS = 20_000  # newest scores read per series


class ManifestSource(Protocol):
    def manifest(self, name: str, version: int | None = None) -> Manifest: ...


@dataclass(frozen=True)
class ModelDrift:
    model_name: str
    model_version: int
    modality: str
    hours: int
    good_parts: int
    median: float | None
    p95: float | None
    calibration_median: float | None
    median_ratio: float | None
    ng_rate: float | None
    calibration_false_reject_rate: float | None
    status: str  # ok, drift, unknown
    reasons: tuple[str, ...]


def model_drift(conn: sqlite3.Connection, manifests: ManifestSource | None, hours: int, tolerance: float,
                now: datetime | None = None) -> list[ModelDrift]:
    since = ((now or datetime.now(UTC)) - timedelta(hours=hours)).isoformat(timespec="microseconds")
    keys = conn.execute("SELECT DISTINCT modality, model_name, model_version FROM quality_series WHERE last_at >= ?"
                        " ORDER BY model_name, model_version, modality", (since,)).fetchall()
    return [_check(conn, manifests, hours, tolerance, since, row[0], row[1], int(row[2])) for row in keys]


def _check(conn: sqlite3.Connection, manifests: ManifestSource | None, hours: int, tolerance: float, since: str,
           modality: str, name: str, version: int) -> ModelDrift:
    good: list[float] = []
    ng = scored = 0
    for (series_id,) in conn.execute("SELECT id FROM quality_series WHERE modality = ? AND model_name = ?"
                                     " AND model_version = ? AND last_at >= ?", (modality, name, version, since)):
        for score, decision in conn.execute("SELECT score, decision FROM quality_scores WHERE series_id = ?"
                                            " AND at >= ? ORDER BY seq DESC LIMIT ?", (series_id, since, MAX_POINTS)):
            scored += 1
            if decision == "OK":
                good.append(float(score))
            else:
                ng += 1
    metrics = _calibration(manifests, name, version)
    cal_median, cal_reject = metrics
    median = statistics.median(good) if good else None
    p95 = statistics.quantiles(good, n=20)[-1] if len(good) >= 2 else None
    ratio = median / cal_median if median is not None and cal_median else None
    ng_rate = ng / scored if scored else None
    reasons: list[str] = []
    if len(good) < MIN_PARTS or (cal_median is None and cal_reject is None):
        status = "unknown"
        reasons.append(f"{len(good)} good parts (at least {MIN_PARTS} needed)" if len(good) < MIN_PARTS
                       else "the model's manifest has no calibration figures")
    else:
        status = "ok"
        if ratio is not None and abs(ratio - 1) > tolerance:
            status = "drift"
            reasons.append(f"median good-part score {median:.4g} is {ratio:.2f} x the calibration median "
                           f"{cal_median:.4g} (tolerance {tolerance:.0%})")
        if cal_reject is not None and ng_rate is not None and scored:
            expected = max(cal_reject, 1e-6)
            z = (ng_rate - expected) / math.sqrt(expected * (1 - expected) / scored)
            if z > 3:
                status = "drift"
                reasons.append(f"NG rate {ng_rate:.1%} is far above the calibration's false-reject rate "
                               f"{cal_reject:.1%} (z = {z:.1f})")
    return ModelDrift(name, version, modality, hours, len(good), median, p95, cal_median, ratio,
                      ng_rate, cal_reject, status, tuple(reasons))


def _calibration(manifests: ManifestSource | None, name: str, version: int) -> tuple[float | None, float | None]:
    if manifests is None:
        return None, None
    try:
        metrics = manifests.manifest(name, version).metrics
    except (ManifestError, LookupError, OSError):  # an unknown or removed version: nothing to compare with
        return None, None
    median, reject = metrics.get("calibration_good_score_median"), metrics.get("calibration_false_reject_rate")
    return (float(median) if isinstance(median, int | float) else None,
            float(reject) if isinstance(reject, int | float) else None)
