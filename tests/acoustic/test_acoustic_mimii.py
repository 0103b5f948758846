"""On the MIMII development clips (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acoustic.inspector import AcousticInspector
from acoustic.training import read_wav, train_acoustic_model
from models.runtime import load_model

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
FAN = DATASETS / "mimii-fan-id00"
pytestmark = pytest.mark.skipif(not FAN.is_dir(), reason=f"MIMII development clips not found at {FAN}")


def _auc(normal: list[float], abnormal: list[float]) -> float:
    """Probability that an abnormal clip scores above a normal one (ties count half)."""
    pairs = [(a > n) + 0.5 * (a == n) for a in abnormal for n in normal]
    return float(np.mean(pairs))


def test_fan_id00_unseen_clips_rank_above_normal_with_the_level_ignored(tmp_path: Path) -> None:
    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    train_acoustic_model(normal[:8], {}, "fan-id00", tmp_path / "build", level="ignore")
    inspector = AcousticInspector(load_model(tmp_path / "build"))
    scores: dict[Path, float] = {}
    for path in normal[8:] + abnormal:
        waveform, rate = read_wav(path)
        loud = inspector.judge(waveform, rate)
        quiet = inspector.judge(waveform * 0.25, rate)  # a moved microphone: same verdict, same score
        assert loud.decision != "INVALID" and loud.decision == quiet.decision
        assert loud.score == pytest.approx(quiet.score, rel=1e-3)
        assert loud.score is not None
        scores[path] = loud.score
    auc = _auc([scores[p] for p in normal[8:]], [scores[p] for p in abnormal])
    assert auc >= 0.95, f"AUC {auc:.3f} on 4 unseen normal + 10 abnormal clips"


def test_fan_id00_with_the_level_used_a_change_in_loudness_is_evidence(tmp_path: Path) -> None:
    """A fixed microphone: the same clip 12 dB quieter (or louder) scores higher, and unseen
    normal clips still pass at the written threshold."""
    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    report = train_acoustic_model(normal[:8], {}, "fan-id00", tmp_path / "build")
    assert report.manifest.training.params["level"] == "use"
    point = report.manifest.metrics["operating_point"]
    assert point["good_parts"] == 8 and not point["supported"] and "8 normal clips" in point["warning"]
    inspector = AcousticInspector(load_model(tmp_path / "build"))
    normal_scores, abnormal_scores = [], []
    for path in normal[8:] + abnormal:
        waveform, rate = read_wav(path)
        result = inspector.judge(waveform, rate)
        assert result.score is not None
        (normal_scores if path in normal else abnormal_scores).append(result.score)
        for gain in (0.25, 4.0):
            changed = inspector.judge(np.clip(waveform * gain, -1, 1), rate)
            assert changed.score is not None and changed.score > result.score + 1.0
    assert _auc(normal_scores, abnormal_scores) >= 0.95
    assert sum(s >= report.manifest.threshold for s in normal_scores) <= 1
