"""Honest figures for any model, vision or sound: rates with intervals, AUROC with a grouped bootstrap,
grouped folds, and the operating point (threshold) for a stated target.

Everything here works on scores alone (higher = more likely defective), so both modalities share it
without importing each other. "Groups" are what must never be split between training and test:
the photos of one part, the windows of one recording. Intervals are 95 % unless told otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Z95 = 1.959964
FloatArray = npt.NDArray[np.float64]


def wilson_interval(errors: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a rate ``errors / total`` (0..1 when nothing was counted)."""
    if total <= 0:
        return 0.0, 1.0
    rate = errors / total
    denominator = 1.0 + z * z / total
    centre = (rate + z * z / (2 * total)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def auroc(negatives: Sequence[float] | npt.NDArray[Any], positives: Sequence[float] | npt.NDArray[Any]) -> float:
    """Area under the ROC curve: the chance a positive scores above a negative (ties count half)."""
    neg = np.asarray(negatives, np.float64).reshape(-1)
    pos = np.asarray(positives, np.float64).reshape(-1)
    if neg.size == 0 or pos.size == 0:
        return float("nan")
    values = np.concatenate([neg, pos])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)  # average rank of each distinct value (ties share it)
    average_rank = upper - (counts - 1) / 2.0
    positive_ranks = float(average_rank[inverse[neg.size:]].sum())
    return (positive_ranks - pos.size * (pos.size + 1) / 2) / (neg.size * pos.size)


def _group_ids(groups: Sequence[Any] | None, size: int) -> npt.NDArray[np.int64]:
    if groups is None:
        return np.arange(size, dtype=np.int64)
    if len(groups) != size:
        raise ValueError(f"{len(groups)} groups for {size} scores")
    _, ids = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return np.asarray(ids, np.int64)


def auroc_interval(negatives: Sequence[float] | npt.NDArray[Any], positives: Sequence[float] | npt.NDArray[Any],
                   negative_groups: Sequence[Any] | None = None, positive_groups: Sequence[Any] | None = None,
                   draws: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of the AUROC that resamples whole groups (parts, recordings), each class apart:
    photos of one part are not independent evidence, and resampling them one by one would
    make the interval too narrow."""
    neg = np.asarray(negatives, np.float64).reshape(-1)
    pos = np.asarray(positives, np.float64).reshape(-1)
    if neg.size == 0 or pos.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    neg_ids, pos_ids = _group_ids(negative_groups, neg.size), _group_ids(positive_groups, pos.size)
    neg_members = [np.flatnonzero(neg_ids == g) for g in range(neg_ids.max() + 1)]
    pos_members = [np.flatnonzero(pos_ids == g) for g in range(pos_ids.max() + 1)]
    values = np.empty(draws)
    for draw in range(draws):
        n = np.concatenate([neg_members[i] for i in rng.integers(0, len(neg_members), len(neg_members))])
        p = np.concatenate([pos_members[i] for i in rng.integers(0, len(pos_members), len(pos_members))])
        values[draw] = auroc(neg[n], pos[p])
    tail = (1.0 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1.0 - tail))


def grouped_folds(groups: Sequence[Any], folds: int, seed: int = 0) -> list[npt.NDArray[np.int64]]:
    """Indices of each fold; every member of a group lands in the same fold (groups shuffled, then
    dealt largest first to the smallest fold, so folds stay about equal in size)."""
    ids = _group_ids(groups, len(groups))
    count = int(ids.max()) + 1 if ids.size else 0
    folds = max(1, min(folds, count))
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    sizes = np.bincount(ids, minlength=count)
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds, np.int64)
    fold_of = np.empty(count, np.int64)
    for group in order:
        target = int(np.argmin(load))
        fold_of[group] = target
        load[target] += sizes[group]
    return [np.flatnonzero(fold_of[ids] == f) for f in range(folds)]


def number_runs(paths: Sequence[Path | str], gap: int = 150) -> list[int]:
    """Group files whose names carry nearby numbers (the last number in the name; a jump of more than
    ``gap`` starts a new group): cameras and exports number the photos of one part consecutively.
    A name without a number is a group of its own."""
    numbers: list[int | None] = []
    for path in paths:
        found = re.findall(r"\d+", Path(path).stem)
        numbers.append(int(found[-1]) if found else None)
    known = sorted({n for n in numbers if n is not None})
    run_of: dict[int, int] = {}
    run = 0
    for index, number in enumerate(known):
        run += int(index > 0 and number - known[index - 1] > gap)
        run_of[number] = run
    next_id = run + 1
    result: list[int] = []
    for found_number in numbers:
        if found_number is None:
            result.append(next_id)
            next_id += 1
        else:
            result.append(run_of[found_number])
    return result


def photo_groups(paths: Sequence[Path | str], gap: int = 150) -> list[int] | None:
    """Groups of a training folder's files that are likely photos (or recordings) of one part, to be held
    out together, or None when the names do not tell: number runs (number_runs) are trusted only when
    they split the files into many groups (at least 8, and one per 10 files); serial numbers one apart
    (one photo per part) make a single run and say nothing."""
    runs = number_runs(paths, gap)
    count = len(set(runs))
    return runs if count >= max(8, len(runs) // 10) and count < len(runs) else None


def groups_of(paths: Sequence[Path], rule: Literal["file", "folder", "number-run"], gap: int = 150) -> list[str]:
    """The group of each file: itself, its parent folder (one folder per part), or its run of numbers."""
    if rule == "file":
        return [str(p) for p in paths]
    if rule == "folder":
        return [str(Path(p).parent) for p in paths]
    return [f"run-{r}" for r in number_runs(paths, gap)]


# --- operating point ---------------------------------------------------------------------------

def _binomial_tail(successes: int, trials: int, p: float) -> float:
    """P(Binomial(trials, p) >= successes)."""
    if successes <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for k in range(successes, trials + 1):
        total += math.exp(math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
                          + k * log_p + (trials - k) * log_q)
    return min(1.0, total)


def beta_quantile(a: int, b: int, q: float) -> float:
    """Quantile of Beta(a, b) for whole a, b >= 1 (bisection on its binomial form)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        # P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)
        if _binomial_tail(a, a + b - 1, middle) < q:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def exceedance(scores_above: int, total: int, level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """A threshold placed just above the ``total - scores_above``-th of ``total`` sorted scores: the
    expected share of *new* scores from the same parts that exceed it, and its interval. The share is
    Beta(scores_above + 1, total - scores_above) distributed, whatever the scores' distribution."""
    a, b = scores_above + 1, total - scores_above
    tail = (1.0 - level) / 2
    return a / (a + b), (beta_quantile(a, b, tail), beta_quantile(a, b, 1.0 - tail))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold set for a stated target, and what the parts it came from say it will do."""

    target: Literal["false_reject", "miss"]
    target_rate: float
    threshold: float
    expected_false_reject: float
    false_reject_interval: tuple[float, float]
    expected_miss: float | None
    miss_interval: tuple[float, float] | None
    good_parts: int
    defect_parts: int
    supported: bool  # the parts can support the target; if not, ``warning`` says what they can support
    method: str
    warning: str | None = None

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("expected_false_reject", "expected_miss", "threshold"):
            if values[key] is not None:
                values[key] = round(float(values[key]), 5)
        for key in ("false_reject_interval", "miss_interval"):
            if values[key] is not None:
                values[key] = [round(float(v), 5) for v in values[key]]
        return values


def parts_needed(target_rate: float) -> int:
    """The fewest held-out scores whose largest is a threshold expected to be exceeded by at most
    ``target_rate`` of new parts (1 / (n + 1) <= rate)."""
    return max(1, math.ceil(1.0 / target_rate - 1.0 - 1e-9))


def _between(low: float, high: float) -> float:
    return float((low + high) / 2) if np.isfinite(high) else float(low + max(abs(low) * 1e-4, 1e-6))


NORMAL_TAIL_FROM = 8  # held-out scores below this: the order statistic alone


def normal_tail_threshold(scores: npt.NDArray[np.float64], target_rate: float) -> float | None:
    """A robust normal tail: the median plus z(1 - rate / 2) times the spread of the central scores
    (1.4826 x the median absolute deviation), or None when the scores are too few or do not spread.
    The two-sided quantile allows for tails heavier than a normal's (held-out scores of good parts
    are maxima over a part's map); one odd part among few cannot drag it up as it does the highest
    score."""
    if scores.size < NORMAL_TAIL_FROM:
        return None
    median = float(np.median(scores))
    spread = 1.4826 * float(np.median(np.abs(scores - median)))
    if spread <= 0:
        return None
    return median + NormalDist().inv_cdf(1.0 - target_rate / 2.0) * spread


def threshold_for_false_reject(good: Sequence[float] | npt.NDArray[Any], target_rate: float,
                               defects: Sequence[float] | npt.NDArray[Any] = (),
                               parts: str = "good parts", normal_tail: bool = False) -> OperatingPoint:
    """The lowest threshold (fewest misses) whose false rejects on new good parts are expected to stay
    within ``target_rate``, from held-out good scores.

    Distribution-free, the k-th of n sorted scores, k the smallest such that (n - k + 1) / (n + 1) <=
    target; never beyond the highest score (a threshold extrapolated above every good part passes
    defects that nothing showed to be good).

    ``normal_tail``: from NORMAL_TAIL_FROM scores on, the lower of that and a robust normal tail
    (normal_tail_threshold), for scores whose highest values are often one odd part unlike new ones:
    on the development tiles (grouped cross-validation, bench/bench_vision_holdout.py) the order
    statistic alone rejected 1-3 % of new good tiles for a 5 % target and missed 8-19 points more
    defects than the best threshold at 5 %. Not for sound: there the odd normal clip is normal
    variation that new clips share, and the tail rejected 20-25 % of new normal clips
    (bench/bench_acoustic_holdout.py). The warning says when the parts cannot show the target
    without the assumption, and how many would."""
    scores = np.sort(np.asarray(good, np.float64).reshape(-1))
    n = scores.size
    if n == 0:
        raise ValueError("an operating point needs held-out good scores")
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target false-reject rate {target_rate} must lie between 0 and 1")
    above = max(0, math.floor(target_rate * (n + 1) - 1.0 + 1e-9))  # scores allowed above the threshold
    supported = (above + 1) / (n + 1) <= target_rate + 1e-12
    above = min(above, n - 1)
    kept = scores[n - 1 - above]  # the highest score the threshold must pass
    next_up = scores[n - above] if above > 0 else np.inf
    threshold = _between(kept, next_up)
    method = "order statistic of held-out good scores"
    expected, interval = exceedance(above, n)
    tail = normal_tail_threshold(scores, target_rate) if normal_tail else None
    if tail is not None and tail < threshold:
        threshold = tail
        method = "robust normal tail of held-out good scores (below their order statistic)"
        rejected = int((scores >= threshold).sum())
        expected, interval = rejected / n, wilson_interval(rejected, n)
    warning = None
    if not supported:
        warning = (f"{n} {parts} cannot show a false-reject rate of {target_rate:.1%} by themselves: the threshold "
                   + ("assumes a normal tail of their held-out scores" if method.startswith("robust") else
                      "sits just above the highest of their held-out scores")
                   + f"; expected false rejects about {expected:.1%} (95 % interval {interval[0]:.1%}-"
                   f"{interval[1]:.1%}); {parts_needed(target_rate)} or more {parts} (ideally several times "
                   f"that) support {target_rate:.1%}")
    elif n < 3 * parts_needed(target_rate):
        warning = (f"{n} {parts} support {target_rate:.1%} false rejects only loosely (95 % interval "
                   f"{interval[0]:.1%}-{interval[1]:.1%}); confirm on site with more parts "
                   "(edge-inspect models calibrate)")
    miss, miss_interval = _misses(defects, threshold)
    return OperatingPoint("false_reject", target_rate, threshold, expected, interval, miss, miss_interval, n,
                          len(np.asarray(defects).reshape(-1)), supported, method, warning)


def threshold_for_miss(good: Sequence[float] | npt.NDArray[Any], defects: Sequence[float] | npt.NDArray[Any],
                       target_rate: float, max_false_reject: float | None = None,
                       normal_tail: bool = False) -> OperatingPoint:
    """The highest threshold (fewest false rejects) whose expected misses on new defects stay within
    ``target_rate``, from held-out defect scores (the same order-statistic rule, from below).
    ``max_false_reject``: if that threshold would reject more good parts than this, it is raised to the
    false-reject bound and the warning says the miss target cannot be had at that price."""
    bad = np.sort(np.asarray(defects, np.float64).reshape(-1))
    m = bad.size
    if m == 0:
        raise ValueError("a miss target needs held-out defect scores (--defect folders)")
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target miss rate {target_rate} must lie between 0 and 1")
    below = max(0, math.floor(target_rate * (m + 1) - 1.0 + 1e-9))
    supported = (below + 1) / (m + 1) <= target_rate + 1e-12
    below = min(below, m - 1)
    lowest_caught = bad[below]
    previous = bad[below - 1] if below > 0 else -np.inf
    threshold = float((lowest_caught + previous) / 2) if np.isfinite(previous) else float(
        lowest_caught - max(abs(lowest_caught) * 1e-4, 1e-6))
    miss, miss_interval = exceedance(below, m)
    warning = None if supported else (
        f"{m} defect parts cannot show a miss rate of {target_rate:.1%}: the threshold sits just below the lowest "
        f"defect score, where new defects are expected to be missed about {miss:.1%} of the time "
        f"(95 % interval {miss_interval[0]:.1%}-{miss_interval[1]:.1%}); {parts_needed(target_rate)} or more "
        "defect parts are needed")
    good_scores = np.asarray(good, np.float64).reshape(-1)
    n = good_scores.size
    rejected = int((good_scores >= threshold).sum())
    false_reject, fr_interval = (rejected / n, wilson_interval(rejected, n)) if n else (float("nan"), (0.0, 1.0))
    method = "order statistic of held-out defect scores"
    if max_false_reject is not None and n and false_reject > max_false_reject:
        bounded = threshold_for_false_reject(good_scores, max_false_reject, bad, normal_tail=normal_tail)
        note = (f"missing at most {target_rate:.1%} of defects would reject {false_reject:.1%} of good parts "
                f"(bound {max_false_reject:.1%}); the threshold keeps the bound and misses about "
                f"{bounded.expected_miss:.1%}")
        return OperatingPoint("miss", target_rate, bounded.threshold, bounded.expected_false_reject,
                              bounded.false_reject_interval, bounded.expected_miss, bounded.miss_interval, n, m,
                              False, method + ", raised to the false-reject bound",
                              "; ".join(w for w in (note, bounded.warning) if w))
    return OperatingPoint("miss", target_rate, threshold, false_reject, fr_interval, miss, miss_interval, n, m,
                          supported, method, warning)


def _misses(defects: Sequence[float] | npt.NDArray[Any],
            threshold: float) -> tuple[float | None, tuple[float, float] | None]:
    bad = np.asarray(defects, np.float64).reshape(-1)
    if bad.size == 0:
        return None, None
    missed = int((bad < threshold).sum())
    return missed / bad.size, wilson_interval(missed, bad.size)


# --- a report on labelled scores ----------------------------------------------------------------

def rate_with_interval(errors: int, total: int) -> dict[str, Any]:
    low, high = wilson_interval(errors, total)
    return {"rate": round(errors / total, 5) if total else None, "errors": errors, "of": total,
            "interval": [round(low, 5), round(high, 5)]}


def score_report(good: Sequence[float] | npt.NDArray[Any], defects: Mapping[str, Sequence[float] | npt.NDArray[Any]],
                 threshold: float, good_groups: Sequence[Any] | None = None,
                 defect_groups: Mapping[str, Sequence[Any]] | None = None, draws: int = 1000) -> dict[str, Any]:
    """AUROC (with a grouped bootstrap interval), false rejects and misses (Wilson intervals) at
    ``threshold``, overall and per defect type."""
    good_scores = np.asarray(good, np.float64).reshape(-1)
    defect_groups = defect_groups or {}
    every = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in defects.values()]) if defects else \
        np.zeros(0)
    every_groups = ([f"{label}/{g}" for label, s in defects.items()
                     for g in (defect_groups.get(label) or [f"{i}" for i in range(len(s))])] if defects else [])
    report: dict[str, Any] = {
        "threshold": threshold, "good_files": int(good_scores.size), "defect_files": int(every.size),
        "false_reject": rate_with_interval(int((good_scores >= threshold).sum()), int(good_scores.size)),
    }
    if every.size:
        report["miss"] = rate_with_interval(int((every < threshold).sum()), int(every.size))
    if good_scores.size and every.size:
        report["auroc"] = round(auroc(good_scores, every), 4)
        low, high = auroc_interval(good_scores, every, good_groups, every_groups, draws=draws)
        report["auroc_interval"] = [round(low, 4), round(high, 4)]
    per_type: dict[str, Any] = {}
    for label, scores in defects.items():
        values = np.asarray(scores, np.float64).reshape(-1)
        entry: dict[str, Any] = {"files": int(values.size),
                                 "miss": rate_with_interval(int((values < threshold).sum()), int(values.size))}
        if good_scores.size and values.size:
            entry["auroc"] = round(auroc(good_scores, values), 4)
            low, high = auroc_interval(good_scores, values, good_groups, defect_groups.get(label), draws=draws)
            entry["auroc_interval"] = [round(low, 4), round(high, 4)]
        per_type[label] = entry
    if per_type:
        report["per_defect_type"] = per_type
    return report


def best_miss_at(good: Sequence[float] | npt.NDArray[Any], defects: Sequence[float] | npt.NDArray[Any],
                 max_false_reject: float) -> float:
    """The fewest misses any threshold achieves while rejecting at most ``max_false_reject`` of ``good``
    (a property of the scores, chosen on the test parts themselves: a yardstick, not a result)."""
    good_scores = np.sort(np.asarray(good, np.float64).reshape(-1))
    bad = np.asarray(defects, np.float64).reshape(-1)
    allowed = math.floor(max_false_reject * good_scores.size + 1e-9)
    limit = good_scores[good_scores.size - 1 - allowed] if allowed < good_scores.size else -np.inf
    return float((bad <= limit).mean())


@dataclass(frozen=True)
class Target:
    """What the technician asks of a threshold: at most ``false_reject`` of good parts rejected, and, when
    defects are given and ``miss`` is set, at most ``miss`` of defects passed (within the false-reject
    bound; the warning says when both cannot be had)."""

    false_reject: float = 0.05
    miss: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.false_reject < 0.5:
            raise ValueError(f"false-reject target {self.false_reject}: give a share between 0 and 0.5, e.g. 0.05")
        if self.miss is not None and not 0.0 < self.miss < 0.5:
            raise ValueError(f"miss target {self.miss}: give a share between 0 and 0.5, e.g. 0.01")

    def describe(self) -> str:
        text = f"at most {self.false_reject:.1%} false rejects"
        return text if self.miss is None else f"at most {self.miss:.1%} misses, {text}"


def choose_operating_point(good: Sequence[float] | npt.NDArray[Any], defects: Sequence[float] | npt.NDArray[Any],
                           target: Target, parts: str = "good parts", normal_tail: bool = False) -> OperatingPoint:
    """The threshold for ``target`` from held-out scores (good parts; defects when given); ``normal_tail``:
    see threshold_for_false_reject."""
    bad = np.asarray(defects, np.float64).reshape(-1)
    if target.miss is not None and bad.size:
        return threshold_for_miss(good, bad, target.miss, max_false_reject=target.false_reject,
                                  normal_tail=normal_tail)
    return threshold_for_false_reject(good, target.false_reject, bad, parts, normal_tail)


def operating_point_summary(point: OperatingPoint, target: Target) -> dict[str, Any]:
    """What a manifest records of an operating point (``metrics.operating_point``)."""
    values = point.as_dict()
    values["target"] = {"false_reject": target.false_reject, "miss": target.miss, "text": target.describe(),
                        "set_by": values.pop("target")}  # which of the two rates set the threshold
    return values


def operating_point_at(good: Sequence[float] | npt.NDArray[Any], defects: Sequence[float] | npt.NDArray[Any],
                       threshold: float, target: Target, method: str) -> OperatingPoint:
    """What held-out scores say of a threshold chosen by another rule (false rejects and misses with
    Wilson intervals)."""
    good_scores = np.asarray(good, np.float64).reshape(-1)
    rejected = int((good_scores >= threshold).sum())
    miss, miss_interval = _misses(defects, threshold)
    n = int(good_scores.size)
    false_reject = rejected / n if n else float("nan")
    supported = bool(n) and false_reject <= target.false_reject and (
        target.miss is None or miss is None or miss <= target.miss)
    return OperatingPoint("miss" if target.miss is not None else "false_reject",
                          target.miss if target.miss is not None else target.false_reject, float(threshold),
                          false_reject, wilson_interval(rejected, n), miss, miss_interval, n,
                          len(np.asarray(defects).reshape(-1)), supported, method,
                          None if supported else "the held-out parts do not meet the target at this threshold")
