"""Class-balanced multinomial logistic regression in numpy (full-batch gradient descent)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: npt.NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def fit_softmax(features: FloatArray, labels: npt.NDArray[np.int64], classes: int, l2: float = 1e-3,
                steps: int = 600, rate: float = 0.5) -> tuple[FloatArray, FloatArray]:
    """Weights [D, K] and bias [K] of a softmax classifier; every class weighs the same in total."""
    x = features.astype(np.float64)
    onehot = np.eye(classes)[labels]
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    sample_weight = (1.0 / (classes * np.maximum(counts, 1)))[labels][:, None]
    weights = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    velocity_w, velocity_b = np.zeros_like(weights), np.zeros_like(bias)
    for _ in range(steps):
        error = (softmax(x @ weights + bias) - onehot) * sample_weight
        grad_w = x.T @ error + l2 * weights
        grad_b = error.sum(axis=0)
        velocity_w = 0.9 * velocity_w - rate * grad_w  # momentum
        velocity_b = 0.9 * velocity_b - rate * grad_b
        weights += velocity_w
        bias += velocity_b
    return weights.astype(np.float32), bias.astype(np.float32)
