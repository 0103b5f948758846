from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from acoustic_synth import machine_sound, skip_without_portaudio, write_wav


@pytest.fixture(scope="session")
def synthetic_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """WAV files: 8 normal, 3 'bearing' and 3 'imbalance' faults, 2 s each at 16 kHz."""
    folder = tmp_path_factory.mktemp("synthetic")
    clips: dict[str, list[Path]] = {"normal": [], "bearing": [], "imbalance": []}
    for i in range(8):
        clips["normal"].append(write_wav(folder / f"normal_{i}.wav", machine_sound(i)))
    for fault in ("bearing", "imbalance"):
        for i in range(3):
            clips[fault].append(write_wav(folder / f"{fault}_{i}.wav", machine_sound(100 + i, fault=fault)))
    return clips


@pytest.fixture(scope="session")
def anomaly_build(synthetic_clips: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from acoustic.training import train_acoustic_model

    build = tmp_path_factory.mktemp("anomaly_build")
    train_acoustic_model(synthetic_clips["normal"][:6], {}, "synthetic-hum", build)
    return build


@pytest.fixture(scope="session")
def anomaly_inspector(anomaly_build: Path):  # type: ignore[no-untyped-def]
    from acoustic.inspector import AcousticInspector
    from models.runtime import load_model

    return AcousticInspector(load_model(anomaly_build))


@pytest.fixture(scope="module")
def virtual_mic() -> Iterator[object]:
    from acoustic.virtual_mic import VirtualMicrophone, missing_tools

    missing = missing_tools()
    if missing:
        pytest.skip(f"PulseAudio not installed ({', '.join(missing)} missing; apt install pulseaudio pulseaudio-utils)")
    skip_without_portaudio()
    with VirtualMicrophone(sample_rate=16000) as mic:
        yield mic
