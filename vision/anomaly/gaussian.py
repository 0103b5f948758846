"""Per-position Gaussians of good patch features (the PaDiM idea), a second opinion beside the bank.

The memory bank asks "has any good part anywhere looked like this patch?"; the Gaussian at a map
cell asks "is this patch typical of good parts *at this place*?". Each cell gets the mean and the
shrunk inverse covariance of the projected features of good parts in its 3x3 neighbourhood (all
augmented copies), and an image is scored by its Mahalanobis distance at every cell. Calibration
maps come from Gaussians fitted without the image's own fold, as an unseen part would see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
CALIBRATION_FOLDS = 5


@dataclass
class PositionGaussians:
    mean: FloatArray  # [h*w, D]
    inverse_covariance: FloatArray  # [h*w, D, D]


def fit_position_gaussians(features: FloatArray, map_shape: tuple[int, int], shrinkage: float) -> PositionGaussians:
    """Gaussians from projected features [N, h*w, D] of good parts (N images and copies).

    ``shrinkage`` blends each covariance with a multiple of the identity (its mean variance times
    ``shrinkage``), which keeps it invertible and steady with few parts."""
    count, cells, dims = features.shape
    map_h, map_w = map_shape
    grid = features.reshape(count, map_h, map_w, dims).astype(np.float64)
    means = np.empty((cells, dims), np.float32)
    inverses = np.empty((cells, dims, dims), np.float32)
    identity = np.eye(dims)
    for row in range(map_h):
        for col in range(map_w):
            samples = grid[:, max(0, row - 1):row + 2, max(0, col - 1):col + 2].reshape(-1, dims)
            centre = samples.mean(axis=0)
            centred = samples - centre
            covariance = centred.T @ centred / max(1, len(samples) - 1)
            covariance += shrinkage * np.trace(covariance) / dims * identity + 1e-6 * identity
            cell = row * map_w + col
            means[cell] = centre
            inverses[cell] = np.linalg.inv(covariance)
    return PositionGaussians(means, inverses)


def mahalanobis_map(queries: FloatArray, gaussians: PositionGaussians) -> FloatArray:
    """Mahalanobis distance of each cell's query [h*w, D] to that cell's Gaussian -> [h*w]."""
    diff = (queries - gaussians.mean).astype(np.float32)
    squared = np.einsum("ci,cij,cj->c", diff, gaussians.inverse_covariance, diff)
    return np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)


def held_out_maps(per_image: list[FloatArray], indices: list[int], map_shape: tuple[int, int], shrinkage: float,
                  seed: int = 0) -> FloatArray:
    """Mahalanobis maps [len(indices), h, w] of the first copy of the given images, each scored by
    Gaussians fitted without its fold. ``per_image``: per image, its copies' features [V, h*w, D]."""
    folds = np.random.default_rng(seed).permutation(len(per_image)) % min(CALIBRATION_FOLDS, len(per_image))
    maps = np.empty((len(indices), *map_shape), np.float32)
    for fold in np.unique(folds[indices]):
        rest = np.concatenate([f for i, f in enumerate(per_image) if folds[i] != fold])
        gaussians = fit_position_gaussians(rest, map_shape, shrinkage)
        for row, index in enumerate(indices):
            if folds[index] == fold:
                maps[row] = mahalanobis_map(per_image[index][0], gaussians).reshape(map_shape)
    return maps


@dataclass
class GaussianTerm:
    """What the scoring graph needs of the Gaussians: them, the typical distance and spread of good
    parts at each cell (as for the bank's distances), and the weight of the term in the map."""

    gaussians: PositionGaussians
    position_mean: FloatArray  # [h, w]
    position_scale: FloatArray  # [h, w]
    weight: float
