"""Cross-validation of the classifier head with images of one part kept in the same fold.

A technician often photographs a part more than once (several lights, several positions). If one
photo trains a fold and another validates it, the fold recognises the part instead of judging it,
and the threshold chosen on it promises far fewer false rejects than new parts get. Photos of one
part are the most alike in the set, so each image is grouped with the image most like it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vision.classifier.softmax import fit_softmax, softmax

FOLDS = 5
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def nearest_neighbours(features: FloatArray, chunk: int = 1024) -> tuple[IntArray, FloatArray]:
    """For each row, the other row most like it (cosine similarity) and that similarity."""
    unit = features.astype(np.float32) / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)
    nearest = np.zeros(len(unit), np.int64)
    similarity = np.zeros(len(unit), np.float32)
    for start in range(0, len(unit), chunk):
        block = unit[start:start + chunk] @ unit.T
        block[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        nearest[start:start + chunk] = block.argmax(axis=1)
        similarity[start:start + chunk] = block.max(axis=1)
    return nearest, similarity


def similar_image_groups(features: FloatArray, max_share: float = 0.1) -> IntArray:
    """A group id per image: each image joined with its nearest neighbour, the most alike pairs
    first, as long as no group grows past ``max_share`` of the images (at least 2), so that one
    large cluster of look-alike parts cannot swallow a fold."""
    count = len(features)
    if count < 2:
        return np.zeros(count, np.int64)
    nearest, similarity = nearest_neighbours(features)
    cap = max(2, int(max_share * count))
    parent = np.arange(count)
    size = np.ones(count, np.int64)

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = int(parent[node])
        return node

    for image in np.argsort(-similarity, kind="stable"):
        a, b = root(int(image)), root(int(nearest[image]))
        if a != b and size[a] + size[b] <= cap:
            parent[max(a, b)] = min(a, b)
            size[min(a, b)] += size[max(a, b)]
    return np.array([root(i) for i in range(count)], np.int64)


def out_of_fold_probabilities(features: FloatArray, labels: IntArray, groups: IntArray, classes: int,
                              seed: int) -> npt.NDArray[np.float64]:
    """Probabilities of every row from a softmax head that saw no row of its group (grouped k-fold)."""
    group_ids = np.unique(groups)
    fold_of = dict(zip(group_ids, np.random.default_rng(seed).permutation(len(group_ids)) % FOLDS, strict=True))
    folds = np.array([fold_of[g] for g in groups])
    result = np.zeros((len(features), classes))
    for fold in range(FOLDS):
        held = folds == fold
        weights, bias = fit_softmax(features[~held], labels[~held], classes)
        result[held] = softmax(features[held].astype(np.float64) @ weights + bias)
    return result
