"""The bundled default model models/tile-anomaly/1 loads, verifies and judges the demo samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.manifest import ImageInput
from models.runtime import load_model
from vision.images import read_image_file
from vision.preprocess import to_tensor

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "tile-anomaly" / "1"
SAMPLES = REPO / "samples" / "magnetic-tile"


def test_bundled_model_loads_and_scores() -> None:
    model = load_model(MODEL, threads=2)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput) and model.manifest.kind == "vision-anomaly"
    assert (MODEL / "model.onnx").stat().st_size < 20e6  # backbone and bank 5.5 MB + float16 Gaussians 8.5 MB
    out = model.run(to_tensor(np.full((300, 400), 90, np.uint8), spec))
    assert out["score"].shape == (1,) and np.isfinite(out["score"]).all()
    assert out["anomaly_map"].ndim == 3


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no demo samples")
def test_bundled_model_judges_the_demo_samples() -> None:
    model = load_model(MODEL, threads=2)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    verdicts = {}
    for path in sorted(SAMPLES.glob("*.jpg")):
        score = float(model.run(to_tensor(read_image_file(path).pixels, spec))["score"][0])
        verdicts[path.name] = score >= model.manifest.threshold
    assert verdicts, "no sample images"
    for name, defective in verdicts.items():
        assert defective == (not name.startswith("free_")), name
