"""The level-independent spectral profile that both sound models judge.

Per mel band, the log of the band's power averaged over the window, minus the log of the
window's total power: one value per band, the (log) share of the sound's power in that band,
i.e. the long-term spectrum's shape. Averaging power (not log power) keeps steady tones and
hums, which is where machine faults show (MIMII fan: AUC 0.99 vs 0.97 for mean log power,
leave-one-clip-out). A gain change (a moved microphone, a turned knob) cancels out exactly,
so no model can score loudness. The same computation exists twice, in numpy (training, reference) and as
ONNX nodes (run time); tests keep them equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from onnx import NodeProto, helper

OPSET = 17


def spectral_profile(logmel: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """``(n_mels, frames)`` log-mel -> ``(n_mels,)`` log share of the window's power per band."""
    band_power = np.mean(np.exp(np.asarray(logmel, dtype=np.float64)), axis=1)
    return np.asarray(np.log(band_power) - np.log(np.sum(band_power)))


def window_level(logmel: npt.NDArray[np.floating[Any]]) -> float:
    """``(n_mels, frames)`` log-mel -> the log of the window's total power (what the profile divides out)."""
    band_power = np.mean(np.exp(np.asarray(logmel, dtype=np.float64)), axis=1)
    return float(np.log(np.sum(band_power)))


def profile_nodes(features: str, output: str, prefix: str = "profile") -> list[NodeProto]:
    """ONNX nodes: ``features`` [1, n_mels, T] -> ``output`` [1, n_mels]; opset 17."""
    p = prefix
    return [
        helper.make_node("Exp", [features], [f"{p}_power"]),
        helper.make_node("ReduceMean", [f"{p}_power"], [f"{p}_band_power"], axes=[2], keepdims=0),
        helper.make_node("ReduceSum", [f"{p}_band_power", f"{p}_axis1"], [f"{p}_total_power"], keepdims=1),
        helper.make_node("Log", [f"{p}_band_power"], [f"{p}_log_band_power"]),
        helper.make_node("Log", [f"{p}_total_power"], [f"{p}_log_total_power"]),
        helper.make_node("Sub", [f"{p}_log_band_power", f"{p}_log_total_power"], [output]),
    ]


def profile_initializers(prefix: str = "profile") -> list[Any]:
    return [helper.make_tensor(f"{prefix}_axis1", 7, [1], [1])]  # 7 = INT64
