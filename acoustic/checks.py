"""Checks on captured audio before it is judged: bad input is INVALID, never OK or NG."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class InputLimits:
    """What counts as usable audio. Levels are dB relative to full scale (1.0)."""

    silence_dbfs: float = -75.0
    clip_level: float = 0.999
    max_clipped_fraction: float = 0.001
    min_duration_fraction: float = 0.9


def rms_dbfs(waveform: npt.NDArray[np.floating[Any]]) -> float:
    rms = float(np.sqrt(np.mean(np.square(waveform, dtype=np.float64)))) if waveform.size else 0.0
    return 20.0 * np.log10(rms) if rms > 0 else float("-inf")


def check_input(
    waveform: npt.NDArray[np.floating[Any]],
    sample_rate: int,
    expected_rate: int,
    window_s: float,
    limits: InputLimits = InputLimits(),
) -> str | None:
    """Return why this audio cannot be judged, or None when it can.

    ``waveform`` is mono float in [-1, 1]; ``window_s`` is the length the model was trained on.
    """
    if sample_rate != expected_rate:
        return (
            f"wrong sample rate: got {sample_rate} Hz, the model expects {expected_rate} Hz; "
            "set the capture rate in the station config to the model's rate"
        )
    if waveform.ndim != 1:
        return f"expected mono audio, got an array of shape {waveform.shape}"
    needed = limits.min_duration_fraction * window_s
    duration = waveform.size / sample_rate
    if duration < needed:
        return f"too short: {duration:.2f} s of audio, at least {needed:.2f} s needed"
    if not np.all(np.isfinite(waveform)):
        return "dead device: the audio contains NaN or infinite samples"
    if float(np.ptp(waveform)) == 0.0:
        return "dead device: the signal is flat (all samples equal); check the microphone and its cable"
    level = rms_dbfs(waveform - float(np.mean(waveform)))
    if level < limits.silence_dbfs:
        return f"silence: level {level:.1f} dBFS is below {limits.silence_dbfs:.1f} dBFS; is the machine running?"
    clipped = float(np.mean(np.abs(waveform) >= limits.clip_level))
    if clipped > limits.max_clipped_fraction:
        return (
            f"clipping: {clipped * 100:.2f}% of samples at full scale (limit "
            f"{limits.max_clipped_fraction * 100:.2f}%); lower the input gain"
        )
    return None
