"""Log-mel features, computed the same way for training and for live judging.

The mel filter bank comes from librosa; the STFT is a plain numpy real FFT over Hann-windowed
frames (``center=False``), which matches ``librosa.stft(..., center=False)`` and avoids numba's
first-call compilation on the live path. All parameters travel in the manifest's
``input.features`` dict, so a model always gets the features it was trained on.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel parameters; ``sample_rate`` is the rate the model expects."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None
    log_floor: float = 1e-12

    @classmethod
    def for_rate(cls, sample_rate: int) -> FeatureConfig:
        """Defaults for a capture rate: frames of 43-64 ms, half-overlapping (1024 samples at 16 kHz)."""
        n_fft = 1 << max(8, int(np.log2(sample_rate * 0.064 + 1e-6)))
        return cls(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 2)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``features`` dict (``sample_rate`` lives in ``AudioInput``)."""
        values = asdict(self)
        values.pop("sample_rate")
        values["kind"] = "log-mel"
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], sample_rate: int) -> FeatureConfig:
        known = {k: v for k, v in values.items() if k != "kind"}
        if values.get("kind", "log-mel") != "log-mel":
            raise ValueError(f"unsupported feature kind {values.get('kind')!r}; this build knows 'log-mel'")
        unknown = set(known) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feature parameters {sorted(unknown)} in the manifest")
        return cls(sample_rate=sample_rate, **known)

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop_length


class LogMelExtractor:
    """Waveform (mono float) -> log-mel power, shape ``(n_mels, frames)``, float32."""

    def __init__(self, config: FeatureConfig) -> None:
        import librosa  # imported here: librosa is slow to import and only needed once per extractor

        self.config = config
        self.mel_basis = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
        ).astype(np.float64)
        # the filters are sparse: a sparse product is exact, single-threaded and ~1 ms, where a
        # dense BLAS matmul took 10-20 ms with its threads competing against other work
        self._mel_sparse = scipy.sparse.csr_matrix(self.mel_basis)
        # periodic Hann window, as librosa.stft uses by default
        n = np.arange(config.n_fft)
        self.window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / config.n_fft)

    def power_spectrogram(self, waveform: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
        cfg = self.config
        signal = np.ascontiguousarray(waveform, dtype=np.float64)
        if signal.ndim != 1:
            raise ValueError(f"expected a mono waveform, got shape {signal.shape}")
        n_frames = cfg.frames_for(signal.size)
        if n_frames == 0:
            raise ValueError(f"waveform of {signal.size} samples is shorter than one frame ({cfg.n_fft})")
        frames = np.lib.stride_tricks.as_strided(
            signal,
            shape=(n_frames, cfg.n_fft),
            strides=(signal.strides[0] * cfg.hop_length, signal.strides[0]),
            writeable=False,
        )
        spectrum = np.fft.rfft(frames * self.window, axis=1)
        return spectrum.real**2 + spectrum.imag**2  # (frames, bins), C-contiguous

    def __call__(self, waveform: npt.NDArray[np.floating[Any]]) -> FloatArray:
        mel = np.asarray(self._mel_sparse @ self.power_spectrogram(waveform).T)
        return np.log(mel + self.config.log_floor).astype(np.float32)

    def tensor(self, waveform: npt.NDArray[np.floating[Any]]) -> FloatArray:
        """The model input: ``(1, n_mels, frames)`` float32."""
        return self(waveform)[np.newaxis]


_warm_lock = threading.Lock()
_warmed = False


def warm_up(config: FeatureConfig | None = None) -> float:
    """Pay librosa's import and numba compilation at start-up, not on the first part.

    Returns the seconds spent. Runs the extractor once and one ``librosa.stft`` (the numba
    paths librosa uses); later calls return at once.
    """
    global _warmed
    import time

    started = time.perf_counter()
    with _warm_lock:
        if _warmed:
            return 0.0
        import librosa

        cfg = config or FeatureConfig()
        noise = np.random.default_rng(0).standard_normal(cfg.sample_rate).astype(np.float32) * 0.01
        LogMelExtractor(cfg)(noise)
        librosa.feature.melspectrogram(y=noise, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        _warmed = True
    return time.perf_counter() - started
