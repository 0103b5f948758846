"""Supervised sound model for labelled fault types: logistic regression on spectral profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from acoustic.profile import OPSET, profile_initializers, profile_nodes, spectral_profile


@dataclass(frozen=True)
class ClassifierParams:
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]  # (n_mels, n_labels)
    bias: npt.NDArray[np.float64]  # (n_labels,)

    @classmethod
    def fit(cls, profiles: npt.NDArray[np.float64], targets: npt.NDArray[np.int64], n_labels: int,
            c: float = 1.0) -> ClassifierParams:
        from sklearn.linear_model import LogisticRegression

        mean = profiles.mean(axis=0)
        scale = profiles.std(axis=0) + 1e-3
        model = LogisticRegression(C=c, max_iter=2000)
        model.fit((profiles - mean) / scale, targets)
        weights = np.zeros((profiles.shape[1], n_labels))
        bias = np.full(n_labels, -1e4)  # a label never seen in training is never predicted
        classes = [int(k) for k in model.classes_]
        if len(classes) == 2:  # sklearn stores one row for two classes: logit of the second
            weights[:, classes[1]] = model.coef_[0] / 2
            weights[:, classes[0]] = -model.coef_[0] / 2
            bias[classes[1]], bias[classes[0]] = model.intercept_[0] / 2, -model.intercept_[0] / 2
        else:
            for row, label in enumerate(classes):
                weights[:, label] = model.coef_[row]
                bias[label] = model.intercept_[row]
        return cls(mean, scale, weights, bias)

    def probabilities_of_profiles(self, profiles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        logits = ((np.atleast_2d(profiles) - self.mean) / self.scale) @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return np.asarray(odds / odds.sum(axis=1, keepdims=True))

    def probabilities(self, logmel: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        """Numpy reference of the ONNX graph, for one ``(n_mels, frames)`` window."""
        return self.probabilities_of_profiles(spectral_profile(logmel))[0]


def classifier_onnx(params: ClassifierParams, input_name: str = "features") -> onnx.ModelProto:
    """ONNX graph: log-mel [1, n_mels, T] -> probabilities [1, n_labels] (float32)."""
    n_mels, n_labels = params.weights.shape
    nodes = [
        *profile_nodes(input_name, "profile"),
        helper.make_node("Sub", ["profile", "profile_mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inverse_scale"], ["standardised"]),
        helper.make_node("Gemm", ["standardised", "weights", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    initializers = [
        *profile_initializers(),
        numpy_helper.from_array(params.mean.astype(np.float32)[np.newaxis], "profile_mean"),
        numpy_helper.from_array((1.0 / params.scale).astype(np.float32)[np.newaxis], "inverse_scale"),
        numpy_helper.from_array(params.weights.astype(np.float32), "weights"),
        numpy_helper.from_array(params.bias.astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "acoustic_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, n_mels, "frames"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, n_labels])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-inspect")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
