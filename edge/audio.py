"""Decode uploaded WAV bytes, refusing what is not audio (the acoustic checks judge the rest)."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt


class AudioError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def decode_wav(data: bytes) -> tuple[npt.NDArray[np.float32], int]:
    """WAV bytes -> (mono float32 samples in [-1, 1], sample rate)."""
    if not data:
        raise AudioError("empty", "the request carried no audio data")
    try:
        import soundfile as sf
    except ImportError as exc:
        raise AudioError("unsupported", "audio support is not installed: pip install 'edge-inspect[audio]'") from exc
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, TypeError, ValueError) as exc:
        raise AudioError("not_audio", f"the data is not a readable WAV recording: {exc}") from exc
    if samples.shape[0] == 0:
        raise AudioError("empty", "the recording holds no samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    return np.ascontiguousarray(mono), int(rate)
