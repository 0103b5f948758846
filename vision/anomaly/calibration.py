"""Score calibration from good images only: per-position normalisation and the decision threshold.

Each calibration image is scored against the memory bank *without its own patches*
(leave-one-image-out), which is what an unseen good part looks like to the model. Those maps
give the typical distance and spread at each map position (tile edges and corners vary more
than the middle), and their normalised maxima give the score distribution of good parts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from vision.anomaly.gaussian import GaussianTerm
from vision.anomaly.graph import gaussian_kernel

FloatArray = npt.NDArray[np.float32]


def nearest_distances(queries: FloatArray, bank: FloatArray, excluded: npt.NDArray[np.bool_] | None = None,
                      chunk: int = 4096) -> FloatArray:
    """Euclidean distance of each query [Q, D] to its nearest bank row [M, D], skipping excluded rows."""
    bank_sq = np.einsum("ij,ij->i", bank, bank)
    if excluded is not None:
        bank_sq = np.where(excluded, np.float32(np.inf), bank_sq).astype(np.float32)
    out = np.empty(queries.shape[0], np.float32)
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk]
        squared = (q @ (-2.0 * bank.T) + bank_sq[None, :]).min(axis=1) + np.einsum("ij,ij->i", q, q)
        out[start:start + chunk] = np.sqrt(np.maximum(squared, 0.0))
    return out


def most_similar(features: list[FloatArray], indices: list[int], count: int) -> list[npt.NDArray[np.int64]]:
    """For each image in ``indices``: itself and the ``count`` training images whose mean patch feature
    is closest in direction (cosine), the candidates for being the same part photographed again."""
    means = np.stack([f.mean(axis=0) for f in features]).astype(np.float64)
    means /= np.linalg.norm(means, axis=1, keepdims=True) + 1e-12
    result = []
    for index in indices:
        similarity = means @ means[index]
        similarity[index] = np.inf  # itself first
        result.append(np.argsort(-similarity)[: count + 1].astype(np.int64))
    return result


def smooth(grid: FloatArray, sigma: float) -> FloatArray:
    """The same Gaussian smoothing as the scoring graph (zero padding, like its Conv)."""
    kernel = gaussian_kernel(sigma)
    if kernel.shape[0] == 1:
        return grid.astype(np.float32)
    result = np.asarray(cv2.filter2D(grid.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT), np.float32)
    return result


@dataclass
class PositionStats:
    mean: FloatArray  # [h, w]
    scale: FloatArray  # [h, w]


def position_stats(maps: FloatArray, symmetric: bool) -> PositionStats:
    """Per-position mean and spread of good-part distance maps [n, h, w], smoothed for robustness."""
    stack = maps
    if symmetric:  # the bank holds flipped copies, so the statistics are flip-symmetric too
        stack = np.concatenate([maps, maps[:, :, ::-1], maps[:, ::-1, :], maps[:, ::-1, ::-1]])
    mean = cv2.GaussianBlur(stack.mean(axis=0).astype(np.float32), (0, 0), 1.0)
    spread = cv2.GaussianBlur(stack.std(axis=0).astype(np.float32), (0, 0), 2.0)
    typical = float(np.median(spread)) if float(np.median(spread)) > 0 else 1.0
    scale = np.clip(spread, 0.5 * typical, 2.0 * typical).astype(np.float32)
    return PositionStats(mean.astype(np.float32), scale)


def normalised_scores(maps: FloatArray, stats: PositionStats, sigma: float,
                      gaussian: tuple[GaussianTerm, FloatArray] | None = None) -> FloatArray:
    """Image scores (max of the normalised, smoothed map), as the scoring graph computes them.

    ``gaussian``: the model's Gaussian term and the images' Mahalanobis maps [n, h, w], blended into
    the bank's normalised maps (see vision.anomaly.gaussian)."""
    normalised = (maps - stats.mean) / stats.scale
    if gaussian is not None:
        term, gaussian_maps = gaussian
        normalised = ((1.0 - term.weight) * normalised
                      + term.weight * (gaussian_maps - term.position_mean) / term.position_scale)
    return np.array([smooth(m, sigma).max() for m in normalised], np.float32)


def held_out_scores(maps: FloatArray, symmetric: bool, sigma: float,
                    gaussian: tuple[GaussianTerm, FloatArray] | None = None) -> FloatArray:
    """The calibration images' scores, each normalised by per-position statistics taken *without* it.

    The model's statistics include every calibration map, and an image's own map pulls the typical
    distance and spread toward itself: normalised in-sample, good parts scored lower than new ones
    (development tiles, 16 good: median 1.44 against 1.86 on new tiles), and an odd one stood out."""
    scores = np.empty(len(maps), np.float32)
    for index in range(len(maps)):
        others = np.delete(maps, index, axis=0)
        stats = position_stats(others, symmetric)
        blend = None
        if gaussian is not None:
            term, gaussian_maps = gaussian
            own = position_stats(np.delete(gaussian_maps, index, axis=0), symmetric)
            blend = (replace(term, position_mean=own.mean, position_scale=own.scale), gaussian_maps[index:index + 1])
        scores[index] = normalised_scores(maps[index:index + 1], stats, sigma, blend)[0]
    return scores


def good_only_threshold(good_scores: FloatArray, false_reject: float = 0.02) -> float:
    """The score that about ``false_reject`` of unseen good parts exceed (the largest, for few images)."""
    if len(good_scores) * false_reject < 1.0:
        return float(good_scores.max())
    return float(np.quantile(good_scores, 1.0 - false_reject))


def tuned_threshold(good_scores: FloatArray, defect_scores: FloatArray, max_false_reject: float = 0.05) -> float:
    """With defect examples: the threshold with the fewest errors that keeps false rejects in bounds."""
    candidates = np.unique(np.concatenate([good_scores, defect_scores]))
    best, best_cost = good_only_threshold(good_scores), np.inf
    for value in candidates:
        false_reject = float((good_scores >= value).mean())
        miss = float((defect_scores < value).mean())
        if false_reject <= max_false_reject and false_reject + miss < best_cost:
            best, best_cost = float(value), false_reject + miss
    # stay between the classes: halfway to the next lower score
    lower = np.concatenate([good_scores, defect_scores])
    lower = lower[lower < best]
    return float((best + lower.max()) / 2) if lower.size else best


def auroc(negatives: FloatArray, positives: FloatArray) -> float:
    """Area under the ROC curve (ties count half)."""
    if len(negatives) == 0 or len(positives) == 0:
        return float("nan")
    values = np.concatenate([negatives, positives])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # average ranks of ties
        tied = values == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    positive_ranks = ranks[len(negatives):].sum()
    return float((positive_ranks - len(positives) * (len(positives) + 1) / 2) / (len(negatives) * len(positives)))
