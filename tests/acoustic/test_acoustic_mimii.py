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


def test_fan_id00_unseen_clips_rank_above_normal(tmp_path: Path) -> None:
    normal = sorted((FAN / "normal").glob("*.wav"))
    abnormal = sorted((FAN / "abnormal").glob("*.wav"))
    train_acoustic_model(normal[:8], {}, "fan-id00", tmp_path / "build")
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
