from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from acoustic_synth import machine_sound

from acoustic.anomaly_model import AnomalyParams
from acoustic.classifier_model import ClassifierParams, classifier_onnx
from acoustic.features import FeatureConfig, LogMelExtractor
from acoustic.inspector import AcousticInspector
from acoustic.profile import spectral_profile, window_level
from acoustic.training import train_acoustic_model
from models.manifest import AudioInput, read_manifest, sha256_of, verify_onnx
from models.registry import ModelRegistry
from models.runtime import create_session, load_model

RATE = 16000


def test_build_folder_has_a_valid_manifest(anomaly_build: Path) -> None:
    manifest = read_manifest(anomaly_build)
    verify_onnx(anomaly_build, manifest)
    assert manifest.version == 1
    assert manifest.kind == "acoustic-anomaly"
    assert manifest.labels == ["normal", "anomalous"]
    assert manifest.outputs == {"score": "score"}
    assert manifest.onnx_sha256 == sha256_of(anomaly_build / "model.onnx")
    assert manifest.input.type == "audio" and manifest.input.sample_rate == RATE
    assert manifest.input.window_s == pytest.approx(2.0)


def test_normal_only_model_flags_a_fault(anomaly_inspector: AcousticInspector) -> None:
    for seed in (50, 51):  # unseen normal clips
        result = anomaly_inspector.judge(machine_sound(seed), RATE)
        assert result.decision == "OK", result
    for fault in ("bearing", "imbalance"):
        result = anomaly_inspector.judge(machine_sound(60, fault=fault), RATE)
        assert result.decision == "NG", (fault, result)
        assert result.label == "anomalous" and result.score is not None and result.score >= result.threshold
    assert set(result.timings) >= {"features_ms", "model_ms", "total_ms"}


def test_with_the_level_ignored_scores_do_not_depend_on_gain(synthetic_clips: dict[str, list[Path]],
                                                             tmp_path: Path) -> None:
    report = train_acoustic_model(synthetic_clips["normal"][:6], {}, "portable", tmp_path, level="ignore")
    assert report.manifest.training.params["level"] == "ignore"
    inspector = AcousticInspector(load_model(tmp_path))
    quiet = inspector.judge(machine_sound(60, fault="bearing", gain=0.1), RATE)
    loud = inspector.judge(machine_sound(60, fault="bearing", gain=3.0), RATE)
    assert quiet.decision == loud.decision == "NG"
    assert quiet.score == pytest.approx(loud.score, rel=1e-3)
    normal_quiet = inspector.judge(machine_sound(61, gain=0.1), RATE)
    assert normal_quiet.decision == "OK"


def test_with_the_level_used_a_quieter_or_louder_machine_is_anomalous(anomaly_inspector: AcousticInspector) -> None:
    """The default: a fixed microphone, where the same sound at another loudness is evidence."""
    assert anomaly_inspector.judge(machine_sound(62), RATE).decision == "OK"
    for gain in (0.1, 3.0):
        assert anomaly_inspector.judge(machine_sound(62, gain=gain), RATE).decision == "NG"


def test_anomaly_onnx_equals_numpy_reference(anomaly_build: Path) -> None:
    from acoustic.anomaly_model import anomaly_onnx

    spec = read_manifest(anomaly_build).input
    assert isinstance(spec, AudioInput)
    extractor = LogMelExtractor(FeatureConfig.from_dict(spec.features, RATE))
    rng = np.random.default_rng(0)
    logmels = [extractor(machine_sound(i, gain=float(rng.uniform(0.8, 1.2)))) for i in range(5)]
    profiles = np.stack([spectral_profile(m) for m in logmels])
    levels = np.asarray([window_level(m) for m in logmels])
    for params in (AnomalyParams.fit(profiles), AnomalyParams.fit(profiles, levels=levels)):
        path = anomaly_build.parent / "reference.onnx"
        path.write_bytes(anomaly_onnx(params).SerializeToString())
        session = create_session(path)
        for seed, fault in [(70, None), (71, "bearing"), (72, "imbalance")]:
            logmel = extractor(machine_sound(seed, fault=fault, gain=float(rng.uniform(0.2, 2))))
            (onnx_score,) = session.run(None, {"features": logmel[np.newaxis]})
            assert onnx_score.shape == (1,)
            assert float(onnx_score[0]) == pytest.approx(params.score(logmel), rel=1e-4, abs=1e-4)


def test_classifier_onnx_equals_numpy_reference(tmp_path: Path) -> None:
    extractor = LogMelExtractor(FeatureConfig())
    faults = [None, "bearing", "imbalance"]
    x = np.stack([spectral_profile(extractor(machine_sound(i, fault=f))) for f in faults for i in range(4)])
    y = np.repeat(np.arange(3), 4)
    params = ClassifierParams.fit(x, y, 3)
    path = tmp_path / "classifier.onnx"
    path.write_bytes(classifier_onnx(params).SerializeToString())
    session = create_session(path)
    logmel = extractor(machine_sound(90, fault="bearing"))
    (probabilities,) = session.run(None, {"features": logmel[np.newaxis]})
    np.testing.assert_allclose(probabilities[0], params.probabilities(logmel), atol=1e-5)
    assert probabilities.shape == (1, 3) and probabilities[0].sum() == pytest.approx(1.0, abs=1e-5)


def test_classifier_names_the_fault(synthetic_clips: dict[str, list[Path]], tmp_path: Path) -> None:
    report = train_acoustic_model(
        synthetic_clips["normal"],
        {"bearing": synthetic_clips["bearing"], "imbalance": synthetic_clips["imbalance"]},
        "hum-faults",
        tmp_path / "build",
    )
    manifest = report.manifest
    assert manifest.kind == "acoustic-classifier"
    assert manifest.labels == ["normal", "bearing", "imbalance"] and manifest.ok_labels == ["normal"]
    inspector = AcousticInspector(load_model(tmp_path / "build"))
    assert inspector.judge(machine_sound(80), RATE).decision == "OK"
    for fault in ("bearing", "imbalance"):
        result = inspector.judge(machine_sound(81, fault=fault), RATE)
        assert (result.decision, result.label) == ("NG", fault)
        assert result.probabilities is not None and result.probabilities[fault] > 0.5


def test_build_registers_and_loads(anomaly_build: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "state", bundled_root=None)
    version = registry.register(anomaly_build, read_manifest(anomaly_build))
    assert version.version == 1
    model = load_model(version.folder)
    assert model.manifest.kind == "acoustic-anomaly"
    assert json.loads((version.folder / "manifest.json").read_text())["input"]["features"]["n_mels"] == 64


def test_progress_is_reported(synthetic_clips: dict[str, list[Path]], tmp_path: Path) -> None:
    seen: list[float] = []
    train_acoustic_model(synthetic_clips["normal"][:3], {}, "p", tmp_path, progress=lambda f, _m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_training_refuses_bad_data(synthetic_clips: dict[str, list[Path]], tmp_path: Path) -> None:
    from acoustic_synth import write_wav

    from acoustic.training import TrainingDataError

    with pytest.raises(TrainingDataError, match="no normal clips"):
        train_acoustic_model([], {}, "x", tmp_path / "a")
    other_rate = write_wav(tmp_path / "44k.wav", machine_sound(5, rate=44100), rate=44100)
    with pytest.raises(TrainingDataError, match="different sample rates"):
        train_acoustic_model([synthetic_clips["normal"][0], other_rate], {}, "x", tmp_path / "b")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    with pytest.raises(TrainingDataError, match="cannot read"):
        train_acoustic_model([broken], {}, "x", tmp_path / "c")
