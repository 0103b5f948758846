"""Synthetic machine sounds for tests: a hum with harmonics in noise, and faulty variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

RATE = 16000


def machine_sound(
    seed: int, seconds: float = 2.0, rate: int = RATE, fault: str | None = None, gain: float = 1.0
) -> npt.NDArray[np.float32]:
    """A 100 Hz motor hum with harmonics and broadband noise; faults change the spectrum.

    ``fault``: None (normal), "bearing" (a 2.9 kHz whine) or "imbalance" (strong low hum).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    base = 100.0 * (1 + rng.normal(0, 0.003))
    x = sum(a * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi))
            for h, a in [(1, 0.05), (2, 0.03), (3, 0.02), (5, 0.01)])
    x = x + 0.02 * rng.standard_normal(t.size)
    if fault == "bearing":
        x = x + 0.03 * np.sin(2 * np.pi * 2900 * t)
    elif fault == "imbalance":
        x = x + 0.12 * np.sin(2 * np.pi * 0.5 * base * t)
    return (gain * x).astype(np.float32)


def write_wav(path: Path, waveform: npt.NDArray[np.float32], rate: int = RATE) -> Path:
    sf.write(str(path), waveform, rate, subtype="PCM_16")
    return path


def skip_without_portaudio() -> None:
    """Skip the calling test when sounddevice or its PortAudio library cannot be loaded."""
    import pytest

    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as exc:
        pytest.skip(f"sounddevice/PortAudio unavailable ({exc}); pip install sounddevice, apt install libportaudio2")
