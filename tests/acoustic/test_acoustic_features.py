from __future__ import annotations

import numpy as np
import pytest
from acoustic_synth import machine_sound

from acoustic.features import FeatureConfig, LogMelExtractor, warm_up


def test_log_mel_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    config = FeatureConfig(n_fft=1024, hop_length=512, n_mels=64)
    waveform = machine_sound(1)
    ours = LogMelExtractor(config)(waveform)
    mel = librosa.feature.melspectrogram(
        y=waveform, sr=config.sample_rate, n_fft=1024, hop_length=512, n_mels=64, center=False, power=2.0
    )
    np.testing.assert_allclose(ours, np.log(mel + config.log_floor), atol=1e-4)
    assert ours.shape == (64, config.frames_for(waveform.size))


def test_config_round_trip_through_manifest_dict() -> None:
    config = FeatureConfig(sample_rate=48000, n_fft=2048, hop_length=1024, n_mels=96, fmax=12000.0)
    assert FeatureConfig.from_dict(config.to_dict(), 48000) == config
    with pytest.raises(ValueError, match="unknown feature parameters"):
        FeatureConfig.from_dict({"n_mels": 64, "bogus": 1}, 16000)


def test_too_short_waveform_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than one frame"):
        LogMelExtractor(FeatureConfig())(np.zeros(100, dtype=np.float32))


def test_warm_up_runs_once() -> None:
    warm_up()
    assert warm_up() == 0.0
