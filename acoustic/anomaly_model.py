"""Normal-only sound model: how far a window's spectral profile lies from normal, per band.

Training keeps, per mel band, the mean and spread of the profile over normal windows (the
spread shrunk towards the median band's and floored, since a few clips give noisy spreads).
The score is the mean squared z-score over bands: about 1 for normal sound, far higher for
a sound whose power moved between bands (a new tone, a missing one, a changed hum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from acoustic.profile import OPSET, profile_initializers, profile_nodes, spectral_profile


@dataclass(frozen=True)
class AnomalyParams:
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]  # per-band spread used as the z-score denominator

    @classmethod
    def fit(cls, profiles: npt.NDArray[np.float64], shrink: float = 3.0, floor: float = 0.05) -> AnomalyParams:
        """Fit from ``(windows, n_mels)`` normal profiles."""
        if profiles.ndim != 2 or profiles.shape[0] < 1:
            raise ValueError("need at least one normal window to fit the anomaly model")
        n = profiles.shape[0]
        mean = profiles.mean(axis=0)
        var = profiles.var(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
        var = (n * var + shrink * float(np.median(var))) / (n + shrink)
        return cls(mean=mean, scale=np.sqrt(var + floor**2))

    def score_profiles(self, profiles: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = (np.atleast_2d(profiles) - self.mean) / self.scale
        return np.asarray(np.mean(z * z, axis=1))

    def score(self, logmel: npt.NDArray[np.floating[Any]]) -> float:
        """Numpy reference of the ONNX graph, for one ``(n_mels, frames)`` window."""
        return float(self.score_profiles(spectral_profile(logmel))[0])


def anomaly_onnx(params: AnomalyParams, input_name: str = "features") -> onnx.ModelProto:
    """ONNX graph: log-mel [1, n_mels, T] -> score [1] (float32)."""
    n_mels = params.mean.size
    nodes = [
        *profile_nodes(input_name, "profile"),
        helper.make_node("Sub", ["profile", "normal_mean"], ["deviation"]),
        helper.make_node("Mul", ["deviation", "inverse_scale"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z_squared"]),
        helper.make_node("ReduceMean", ["z_squared"], ["score"], axes=[1], keepdims=0),
    ]
    initializers = [
        *profile_initializers(),
        numpy_helper.from_array(params.mean.astype(np.float32)[np.newaxis], "normal_mean"),
        numpy_helper.from_array((1.0 / params.scale).astype(np.float32)[np.newaxis], "inverse_scale"),
    ]
    graph = helper.make_graph(
        nodes,
        "acoustic_anomaly",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, n_mels, "frames"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edge-inspect")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
