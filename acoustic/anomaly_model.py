"""Normal-only sound model: how far a window's spectral profile lies from normal, per band, and
(where the microphone is fixed) how far its level lies from the normal level.

Training keeps, per mel band, the mean and spread of the profile over normal windows (the
spread shrunk towards the median band's and floored, since a few clips give noisy spreads).
The spectral score is the mean squared z-score over bands: about 1 for normal sound, far higher
for a sound whose power moved between bands (a new tone, a missing one, a changed hum).

A station's microphone has a fixed gain and place, so a change in loudness is evidence too: with
the level used, the squared z-score of the window's level (log total power) against the normal
windows' is added, two-sided (a fan that runs louder or quieter). With the level ignored (a
portable or re-gained microphone) the score depends on the spectrum's shape alone, and scaling a
clip does not change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from acoustic.profile import OPSET, profile_initializers, profile_nodes, spectral_profile, window_level

LEVEL_FLOOR = 0.1  # least spread of the level (log power; 0.43 dB): gain and placement are never exact


@dataclass(frozen=True)
class AnomalyParams:
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]  # per-band spread used as the z-score denominator
    level_mean: float = 0.0  # normal windows' mean level (log total power)
    level_scale: float = 1.0  # its spread, floored at LEVEL_FLOOR
    level_weight: float = 0.0  # 0: the level is ignored; 1: its squared z-score is added to the score

    @classmethod
    def fit(cls, profiles: npt.NDArray[np.float64], shrink: float = 3.0, floor: float = 0.05,
            levels: npt.NDArray[np.float64] | None = None) -> AnomalyParams:
        """Fit from ``(windows, n_mels)`` normal profiles (and their levels, to use the level)."""
        if profiles.ndim != 2 or profiles.shape[0] < 1:
            raise ValueError("need at least one normal window to fit the anomaly model")
        n = profiles.shape[0]
        mean = profiles.mean(axis=0)
        var = profiles.var(axis=0, ddof=1) if n > 1 else np.zeros_like(mean)
        var = (n * var + shrink * float(np.median(var))) / (n + shrink)
        if levels is None:
            return cls(mean=mean, scale=np.sqrt(var + floor**2))
        level_var = float(np.var(levels, ddof=1)) if len(levels) > 1 else 0.0
        return cls(mean=mean, scale=np.sqrt(var + floor**2), level_mean=float(np.mean(levels)),
                   level_scale=float(np.sqrt(level_var + LEVEL_FLOOR**2)), level_weight=1.0)

    @property
    def uses_level(self) -> bool:
        return self.level_weight > 0

    def score_profiles(self, profiles: npt.NDArray[np.float64],
                       levels: npt.NDArray[np.float64] | None = None) -> npt.NDArray[np.float64]:
        z = (np.atleast_2d(profiles) - self.mean) / self.scale
        score = np.mean(z * z, axis=1)
        if self.uses_level:
            if levels is None:
                raise ValueError("this model uses the level: give the windows' levels")
            level_z = (np.asarray(levels, np.float64).reshape(-1) - self.level_mean) / self.level_scale
            score = score + self.level_weight * level_z * level_z
        return np.asarray(score)

    def score(self, logmel: npt.NDArray[np.floating[Any]]) -> float:
        """Numpy reference of the ONNX graph, for one ``(n_mels, frames)`` window."""
        level = np.array([window_level(logmel)])
        return float(self.score_profiles(spectral_profile(logmel), level if self.uses_level else None)[0])


def anomaly_onnx(params: AnomalyParams, input_name: str = "features") -> onnx.ModelProto:
    """ONNX graph: log-mel [1, n_mels, T] -> score [1] (float32)."""
    n_mels = params.mean.size
    spectral = "score" if not params.uses_level else "spectral_score"
    nodes = [
        *profile_nodes(input_name, "profile"),
        helper.make_node("Sub", ["profile", "normal_mean"], ["deviation"]),
        helper.make_node("Mul", ["deviation", "inverse_scale"], ["z"]),
        helper.make_node("Mul", ["z", "z"], ["z_squared"]),
        helper.make_node("ReduceMean", ["z_squared"], [spectral], axes=[1], keepdims=0),
    ]
    initializers = [
        *profile_initializers(),
        numpy_helper.from_array(params.mean.astype(np.float32)[np.newaxis], "normal_mean"),
        numpy_helper.from_array((1.0 / params.scale).astype(np.float32)[np.newaxis], "inverse_scale"),
    ]
    if params.uses_level:
        nodes += [
            helper.make_node("Sub", ["profile_log_total_power", "level_mean"], ["level_deviation"]),
            helper.make_node("Mul", ["level_deviation", "level_inverse_scale"], ["level_z"]),
            helper.make_node("Mul", ["level_z", "level_z"], ["level_z_squared"]),
            helper.make_node("ReduceMean", ["level_z_squared"], ["level_term"], axes=[1], keepdims=0),
            helper.make_node("Mul", ["level_term", "level_weight"], ["weighted_level_term"]),
            helper.make_node("Add", [spectral, "weighted_level_term"], ["score"]),
        ]
        initializers += [
            numpy_helper.from_array(np.array([[params.level_mean]], np.float32), "level_mean"),
            numpy_helper.from_array(np.array([[1.0 / params.level_scale]], np.float32), "level_inverse_scale"),
            numpy_helper.from_array(np.array([params.level_weight], np.float32), "level_weight"),
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
