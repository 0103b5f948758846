from __future__ import annotations

import numpy as np
import pytest
from acoustic_synth import machine_sound

from acoustic.checks import check_input
from acoustic.inspector import AcousticInspector
from acoustic.sources import Clip

RATE = 16000


def test_good_audio_passes() -> None:
    assert check_input(machine_sound(1), RATE, RATE, 2.0) is None


@pytest.mark.parametrize(
    ("waveform", "rate", "expected"),
    [
        (np.zeros(2 * RATE, np.float32), RATE, "dead device"),
        (np.full(2 * RATE, 1e-6, np.float32), RATE, "dead device"),
        (machine_sound(1) * 1e-4, RATE, "silence"),
        (np.clip(machine_sound(1) * 40, -1, 1), RATE, "clipping"),
        (machine_sound(1), 44100, "wrong sample rate"),
        (machine_sound(1, seconds=0.5), RATE, "too short"),
        (np.where(np.arange(2 * RATE) == 5, np.nan, machine_sound(1)).astype(np.float32), RATE, "NaN"),
    ],
)
def test_bad_audio_has_a_reason(waveform: np.ndarray, rate: int, expected: str) -> None:
    reason = check_input(waveform, rate, RATE, 2.0)
    assert reason is not None and expected in reason


@pytest.mark.parametrize(
    ("waveform", "rate", "expected"),
    [
        (np.zeros(2 * RATE, np.float32), RATE, "dead device"),
        (machine_sound(3, fault="bearing") * 1e-4, RATE, "silence"),
        (np.clip(machine_sound(3, fault="bearing") * 40, -1, 1), RATE, "clipping"),
        (machine_sound(3, fault="bearing"), 48000, "wrong sample rate"),
    ],
)
def test_inspector_judges_bad_audio_invalid(
    anomaly_inspector: AcousticInspector, waveform: np.ndarray, rate: int, expected: str
) -> None:
    result = anomaly_inspector.judge(waveform, rate)
    assert result.decision == "INVALID"
    assert result.reason is not None and expected in result.reason
    assert result.score is None


def test_device_error_clip_is_invalid(anomaly_inspector: AcousticInspector) -> None:
    clip = Clip(np.zeros((0, 1), np.float32), RATE, 0.0, error="audio device 'pulse' unavailable")
    result = anomaly_inspector.judge_clip(clip)
    assert result.decision == "INVALID" and "unavailable" in (result.reason or "")
