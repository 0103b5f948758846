"""Control-chart arithmetic, independent of the store: individuals and moving-range limits, the p-chart,
Western Electric rules 1-4 (and Nelson's trend rule), and process capability against an upper limit."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

D2 = 1.128  # E[moving range of 2] / sigma
D4 = 3.267  # upper limit factor of the moving-range chart

RULES = {
    1: "one point beyond 3 sigma",
    2: "2 of 3 points beyond 2 sigma on one side",
    3: "4 of 5 points beyond 1 sigma on one side",
    4: "8 points in a row on one side of the centre line",
    5: "6 points in a row steadily rising or falling (Nelson 3)",
}


@dataclass(frozen=True)
class Limits:
    """Individuals chart limits (centre +- 3 sigma) and the moving-range chart's upper limit."""

    center: float
    sigma: float
    mr_bar: float
    baseline_points: int  # points the limits came from, after dropping out-of-control ones

    @property
    def ucl(self) -> float:
        return self.center + 3 * self.sigma

    @property
    def lcl(self) -> float:
        return self.center - 3 * self.sigma

    @property
    def mr_ucl(self) -> float:
        return D4 * self.mr_bar


def moving_ranges(values: Sequence[float]) -> list[float]:
    return [abs(b - a) for a, b in itertools.pairwise(values)]


def imr_limits(values: Sequence[float]) -> Limits | None:
    """Limits from a baseline (phase I): sigma = mean moving range / d2; points beyond the first limits are
    dropped once and the limits recomputed, so a few defects in the baseline do not widen them."""
    if len(values) < 2:
        return None
    first = _limits(values)
    kept = [v for v in values if first.lcl <= v <= first.ucl] if first.sigma > 0 else list(values)
    return _limits(kept) if 2 <= len(kept) < len(values) else first


def _limits(values: Sequence[float]) -> Limits:
    ranges = moving_ranges(values)
    mr_bar = statistics.fmean(ranges) if ranges else 0.0
    return Limits(statistics.fmean(values), mr_bar / D2, mr_bar, len(values))


def rule_violations(values: Sequence[float], center: float, sigma: float) -> list[list[int]]:
    """For each point, the rules (see RULES) broken by the run that ends at it."""
    result: list[list[int]] = [[] for _ in values]
    if sigma <= 0:
        return result
    z = [(v - center) / sigma for v in values]
    for i in range(len(z)):
        broken = result[i]
        if abs(z[i]) > 3:
            broken.append(1)
        if _k_of_n_beyond(z, i, 2, 3, 2.0):
            broken.append(2)
        if _k_of_n_beyond(z, i, 4, 5, 1.0):
            broken.append(3)
        if i >= 7 and (all(x > 0 for x in z[i - 7:i + 1]) or all(x < 0 for x in z[i - 7:i + 1])):
            broken.append(4)
        if i >= 5:
            steps = [b - a for a, b in itertools.pairwise(z[i - 5:i + 1])]
            if all(s > 0 for s in steps) or all(s < 0 for s in steps):
                broken.append(5)
    return result


def _k_of_n_beyond(z: Sequence[float], i: int, k: int, n: int, limit: float) -> bool:
    """k of the n points ending at i beyond ``limit`` sigma on the side of point i (which must be one)."""
    if i < n - 1 or abs(z[i]) <= limit:
        return False
    side = 1 if z[i] > 0 else -1
    return sum(1 for x in z[i - n + 1:i + 1] if x * side > limit) >= k


@dataclass(frozen=True)
class Proportion:
    """One p-chart subgroup: its NG rate and limits (they depend on its size)."""

    parts: int
    ng: int
    p: float
    ucl: float
    lcl: float


def p_bar_of(groups: Sequence[tuple[int, int]]) -> float | None:
    """The centre line of a p-chart: the NG rate of the baseline subgroups, given as (parts, NG parts)."""
    total = sum(n for n, _ in groups)
    return sum(d for _, d in groups) / total if total else None


def p_limits(p_bar: float, groups: Sequence[tuple[int, int]]) -> list[Proportion]:
    """Each subgroup's NG rate with its 3-sigma limits (they narrow as the subgroup grows)."""
    points = []
    for n, d in groups:
        spread = 3 * math.sqrt(p_bar * (1 - p_bar) / n) if n > 0 else 0.0
        points.append(Proportion(n, d, d / n if n else 0.0, min(1.0, p_bar + spread), max(0.0, p_bar - spread)))
    return points


def standardized(p_bar: float, point: Proportion) -> float:
    """The subgroup's distance from the centre line in its own sigmas (so the run rules apply)."""
    sigma = (point.ucl - p_bar) / 3 if point.ucl < 1.0 else math.sqrt(p_bar * (1 - p_bar) / max(point.parts, 1))
    if sigma <= 0:
        return 0.0 if point.p == p_bar else math.copysign(1e9, point.p - p_bar)
    return (point.p - p_bar) / sigma


@dataclass(frozen=True)
class Capability:
    """Capability of a characteristic with only an upper specification limit (the model's threshold on
    its anomaly score): Cp needs two limits and is not defined; Cpk = Cpu = (USL - mean) / 3 sigma with
    the within-subgroup sigma (moving range), Ppk the same with the overall standard deviation."""

    usl: float
    mean: float
    sigma_within: float
    sigma_overall: float
    cpk: float | None
    ppk: float | None
    cp: float | None = None


def upper_capability(values: Sequence[float], usl: float) -> Capability | None:
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    ranges = moving_ranges(values)
    within = statistics.fmean(ranges) / D2 if ranges else 0.0
    overall = statistics.stdev(values)
    return Capability(usl, mean, within, overall, (usl - mean) / (3 * within) if within > 0 else None,
                      (usl - mean) / (3 * overall) if overall > 0 else None)
