"""Per-position Gaussians of good patch features (the PaDiM idea), a second opinion beside the bank.

The memory bank asks "has any good part anywhere looked like this patch?"; the Gaussian at a map
cell asks "is this patch typical of good parts *at this place*?". Each cell gets the mean and the
shrunk covariance of the features of good parts in its 3x3 neighbourhood (all augmented copies),
and an image is scored by its Mahalanobis distance at every cell. Calibration maps come from
Gaussians fitted without the image's own fold, as an unseen part would see them.

A cell's covariance is kept as its whitening factor W (upper-triangular, W Wᵀ = the inverse
covariance; the distance is |diff @ W|), rounded to float16 precision with one float32 scale per
cell: the model file holds the triangle at half precision (8 MB instead of 34 MB for 512 cells of
128 dimensions), and training computes with the same rounded values that inference will.
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
    whitening: FloatArray  # [h*w, D, D] upper-triangular W, W Wᵀ = inverse covariance: float16 values x scale
    scale: FloatArray  # [h*w] per cell: W / scale is exact in float16

    def half_precision_triangles(self) -> npt.NDArray[np.float16]:
        """The upper triangles of W / scale, row by row [h*w, D(D+1)/2]: what the model file stores."""
        rows, columns = np.triu_indices(self.whitening.shape[1])
        return (self.whitening[:, rows, columns] / self.scale[:, None]).astype(np.float16)


@dataclass
class GaussianTerm:
    """What the scoring graph needs of the Gaussians: the projection of the (centred) patch features
    they model, them, the typical distance and spread of good parts at each cell (as for the bank's
    distances), and the weight of the term in the map."""

    projection: FloatArray  # [C, D]
    gaussians: PositionGaussians
    position_mean: FloatArray  # [h, w]
    position_scale: FloatArray  # [h, w]
    weight: float


@dataclass
class _Moments:
    """Per cell: how many samples, their sum [h*w, D] and the sum of their outer products [h*w, D, D],
    all taken about one centre [D] (near the data, so that float32 sums lose little to cancellation)."""

    count: int
    centre: FloatArray
    sums: npt.NDArray[np.float64]
    outer: npt.NDArray[np.float64]

    @staticmethod
    def of(features: FloatArray, centre: FloatArray) -> _Moments:
        """Moments of features [N, h*w, D] (N images and copies) about ``centre`` [D], cell by cell."""
        by_cell = np.ascontiguousarray((features - centre).transpose(1, 0, 2), dtype=np.float32)  # [hw, N, D]
        outer = np.matmul(by_cell.transpose(0, 2, 1), by_cell)  # one BLAS call per cell
        return _Moments(features.shape[0], centre, by_cell.sum(axis=1, dtype=np.float64), outer.astype(np.float64))

    def __sub__(self, other: _Moments) -> _Moments:
        return _Moments(self.count - other.count, self.centre, self.sums - other.sums, self.outer - other.outer)


def _neighbourhood_sum(values: npt.NDArray[np.float64], map_shape: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Sum over each cell's 3x3 neighbourhood (inside the map) of per-cell values [h*w, ...]."""
    map_h, map_w = map_shape
    grid = values.reshape(map_h, map_w, *values.shape[1:])
    padded = np.zeros((map_h + 2, map_w + 2, *values.shape[1:]))
    padded[1:-1, 1:-1] = grid
    total = sum(padded[r:r + map_h, c:c + map_w] for r in range(3) for c in range(3))
    return np.asarray(total).reshape(values.shape)


def _gaussians_from(moments: _Moments, map_shape: tuple[int, int], shrinkage: float) -> PositionGaussians:
    """Each cell's Gaussian over the samples of its 3x3 neighbourhood, from per-cell moments."""
    cells, dims = moments.sums.shape
    counts = _neighbourhood_sum(np.full(cells, float(moments.count)), map_shape)[:, None, None]  # [hw, 1, 1]
    sums = _neighbourhood_sum(moments.sums, map_shape)
    outer = _neighbourhood_sum(moments.outer, map_shape)
    means = sums / counts[:, :, 0]  # about the centre
    covariance = (outer - counts * means[:, :, None] * means[:, None, :]) / np.maximum(counts - 1, 1)
    identity = np.eye(dims)
    regulariser = shrinkage * np.trace(covariance, axis1=1, axis2=2) / dims + 1e-6
    covariance += regulariser[:, None, None] * identity
    return _with_whitening((means + moments.centre).astype(np.float32), covariance)


def _with_whitening(mean: FloatArray, covariance: npt.NDArray[np.float64]) -> PositionGaussians:
    """Gaussians whose covariances [hw, D, D] are kept as rounded whitening factors (see the top)."""
    lower = np.linalg.cholesky(covariance)  # covariance = M Mᵀ, so |M⁻¹ diff| is the distance
    whitening = np.linalg.inv(lower).transpose(0, 2, 1)  # W = M⁻ᵀ, upper-triangular
    scale = np.abs(whitening).max(axis=(1, 2)) / 2.0**14  # the largest entry lands at 16384 in float16
    halves = (whitening / scale[:, None, None]).astype(np.float16).astype(np.float32)
    scale32 = scale.astype(np.float32)
    return PositionGaussians(mean, halves * scale32[:, None, None], scale32)


def fit_position_gaussians(features: FloatArray, map_shape: tuple[int, int], shrinkage: float) -> PositionGaussians:
    """Gaussians from features [N, h*w, D] of good parts (N images and copies).

    ``shrinkage`` adds a multiple of the identity to each covariance (its mean variance times
    ``shrinkage``), which keeps it invertible and steady with few parts."""
    return _gaussians_from(_Moments.of(features, features[0].mean(axis=0)), map_shape, shrinkage)


def mahalanobis_map(queries: FloatArray, gaussians: PositionGaussians) -> FloatArray:
    """Mahalanobis distance of each cell's query [h*w, D] to that cell's Gaussian -> [h*w]."""
    diff = (queries - gaussians.mean).astype(np.float32)[:, None, :]  # [hw, 1, D]
    whitened = np.matmul(diff, gaussians.whitening)[:, 0, :]
    return np.sqrt(np.einsum("cd,cd->c", whitened, whitened)).astype(np.float32)


def fit_with_held_out_maps(per_image: list[FloatArray], indices: list[int], map_shape: tuple[int, int],
                           shrinkage: float, seed: int = 0,
                           folds: int = CALIBRATION_FOLDS,
                           groups: list[int] | None = None) -> tuple[PositionGaussians, FloatArray]:
    """The Gaussians of all images, and the Mahalanobis maps [len(indices), h, w] of the first copy of
    the given images, each scored by Gaussians fitted without its fold (one pass over the data: a fold
    is taken out of the moments by subtraction). ``per_image``: per image, its copies' features [V, h*w, D].
    ``groups``: images of one group (photos of one part) share a fold."""
    group_ids = np.unique(np.asarray(groups if groups is not None else range(len(per_image))), return_inverse=True)[1]
    count = int(group_ids.max()) + 1
    fold_of = (np.random.default_rng(seed).permutation(count) % min(max(folds, 2), count))[group_ids]
    centre = per_image[0][0].mean(axis=0)
    every = _Moments.of(np.concatenate(per_image), centre)
    maps = np.empty((len(indices), *map_shape), np.float32)
    for fold in np.unique(fold_of[indices]):
        left_out = _Moments.of(np.concatenate([f for i, f in enumerate(per_image) if fold_of[i] == fold]), centre)
        gaussians = _gaussians_from(every - left_out, map_shape, shrinkage)
        for row, index in enumerate(indices):
            if fold_of[index] == fold:
                maps[row] = mahalanobis_map(per_image[index][0], gaussians).reshape(map_shape)
    return _gaussians_from(every, map_shape, shrinkage), maps
