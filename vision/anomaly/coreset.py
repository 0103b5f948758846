"""A fast approximate greedy (k-centre) coreset of the good patches.

Exact greedy coreset selection adds one patch at a time and updates every patch's distance to
the selection: millions of patches times thousands of steps. Here each step adds a *batch* of
patches: the farthest candidates, thinned by a small exact greedy pass among themselves so the
batch does not pick near-duplicates, and distances are measured in a low-dimensional projection.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def _squared_distances(points: FloatArray, centres: FloatArray, points_sq: FloatArray) -> FloatArray:
    centres_sq = np.einsum("ij,ij->i", centres, centres)
    result: FloatArray = points_sq[:, None] - 2.0 * (points @ centres.T) + centres_sq[None, :]
    return result


def greedy_coreset(points: FloatArray, size: int, dims: int = 24, batch: int = 32,
                   seed: int = 0) -> npt.NDArray[np.int64]:
    """Indices of ``size`` points that cover ``points`` [N, D] well (approximate k-centre greedy)."""
    count = points.shape[0]
    if size >= count:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if dims and points.shape[1] > dims:
        # a random Gaussian projection keeps distances roughly (Johnson-Lindenstrauss)
        projection = rng.standard_normal((points.shape[1], dims)).astype(np.float32) / np.sqrt(dims)
        reduced = np.ascontiguousarray(points @ projection, dtype=np.float32)
    else:
        reduced = np.ascontiguousarray(points, dtype=np.float32)
    reduced_sq = np.einsum("ij,ij->i", reduced, reduced)
    columns = np.ascontiguousarray(reduced.T)  # [dims, N]: distance rows come out contiguous

    def distances_to(centres: FloatArray) -> FloatArray:
        """Squared distances [len(centres), N] of every point to the given centres."""
        cross: FloatArray = centres @ columns
        cross *= -2.0
        cross += reduced_sq[None, :]
        cross += np.einsum("ij,ij->i", centres, centres)[:, None]
        return cross

    chosen = [int(rng.integers(count))]
    nearest = distances_to(reduced[chosen])[0]
    while len(chosen) < size:
        take = min(batch, size - len(chosen))
        pool = min(count, 4 * take)
        candidates = np.argpartition(nearest, count - pool)[count - pool:]
        picked = _thin(reduced[candidates], nearest[candidates], take)
        new = candidates[picked]
        chosen.extend(int(i) for i in new)
        np.minimum(nearest, distances_to(reduced[new]).min(axis=0), out=nearest)
        nearest[new] = 0.0
    return np.asarray(chosen, dtype=np.int64)


def _thin(candidates: FloatArray, nearest: FloatArray, take: int) -> list[int]:
    """Exact greedy among a few candidates, given their distances to the current selection."""
    sq = np.einsum("ij,ij->i", candidates, candidates)
    mutual = np.maximum(_squared_distances(candidates, candidates, sq), 0.0)
    remaining = nearest.astype(np.float32).copy()
    picked: list[int] = []
    for _ in range(take):
        best = int(np.argmax(remaining))
        picked.append(best)
        np.minimum(remaining, mutual[best], out=remaining)
        remaining[best] = -1.0
    return picked
