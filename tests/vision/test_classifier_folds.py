"""Grouping look-alike images (photos of one part) into one cross-validation fold."""

from __future__ import annotations

import numpy as np

from vision.classifier.folds import out_of_fold_probabilities, similar_image_groups


def test_photos_of_one_part_share_a_group() -> None:
    rng = np.random.default_rng(0)
    parts = rng.normal(size=(12, 16))
    photos = np.repeat(parts, 3, axis=0) + rng.normal(scale=0.05, size=(36, 16))  # 3 photos per part
    order = rng.permutation(36)
    groups = similar_image_groups(photos[order].astype(np.float32))
    part_of = np.repeat(np.arange(12), 3)[order]
    for part in range(12):
        assert len(set(groups[part_of == part])) == 1
    assert len(set(groups)) == 12


def test_no_group_swallows_a_fold() -> None:
    rng = np.random.default_rng(1)
    alike = np.ones((40, 8)) + rng.normal(scale=1e-3, size=(40, 8))  # forty near-identical images
    groups = similar_image_groups(alike.astype(np.float32), max_share=0.1)
    assert np.bincount(np.unique(groups, return_inverse=True)[1]).max() <= 4
    assert len(similar_image_groups(np.ones((1, 8), np.float32))) == 1


def test_out_of_fold_never_trains_on_the_group_it_scores() -> None:
    # Every group is a pair with opposite labels and identical features: a model that saw one of the
    # pair would be torn; one that saw neither predicts from the other groups only.
    rng = np.random.default_rng(2)
    features = np.repeat(rng.normal(size=(30, 4)), 2, axis=0).astype(np.float32)
    labels = np.tile([0, 1], 30).astype(np.int64)
    groups = np.repeat(np.arange(30), 2).astype(np.int64)
    probabilities = out_of_fold_probabilities(features, labels, groups, 2, seed=0)
    assert probabilities.shape == (60, 2) and np.allclose(probabilities.sum(axis=1), 1.0)
    assert np.allclose(probabilities[0::2], probabilities[1::2])  # both of a pair from the same fold's model
