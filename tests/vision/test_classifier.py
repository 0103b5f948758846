"""The supervised defect classifier: trains from labelled folders, judges by the manifest's rule."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.decision import judge_outputs
from models.manifest import ImageInput
from models.runtime import load_model
from vision.anomaly import AnomalyParams, TrainingDataError
from vision.classifier import train_classifier_model
from vision.preprocess import to_tensor

SMALL = AnomalyParams(height=128, width=256)


def texture(rng: np.random.Generator) -> np.ndarray:
    height, width = (int(v) for v in rng.integers(120, 240, size=2))
    columns = rng.normal(120, 12, size=width)
    image = np.tile(columns, (height, 1)) + rng.normal(0, 6, size=(height, width))
    return np.clip(image, 0, 255).astype(np.uint8)


def blob(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    out = image.copy()
    cv2.circle(out, (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))), h // 6, 15, -1)
    return out


def scratch(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape
    out = image.copy()
    y = int(rng.integers(h // 4, 3 * h // 4))
    cv2.line(out, (w // 8, y), (7 * w // 8, y + int(rng.integers(-10, 10))), 250, 5)
    return out


def write(folder: Path, images: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index, image in enumerate(images):
        paths.append(folder / f"{index}.png")
        cv2.imwrite(str(paths[-1]), image)
    return paths


def test_classifier_learns_labelled_defects(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    good = write(tmp_path / "good", [texture(rng) for _ in range(20)])
    defects = {"blob": write(tmp_path / "blob", [blob(texture(rng), rng) for _ in range(8)]),
               "scratch": write(tmp_path / "scratch", [scratch(texture(rng), rng) for _ in range(8)])}
    report = train_classifier_model(good, defects, "demo-classifier", tmp_path / "build", params=SMALL)
    assert report.manifest.labels == ["good", "blob", "scratch"] and report.manifest.ok_labels == ["good"]
    model = load_model(tmp_path / "build", threads=2)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput) and model.manifest.kind == "vision-classifier"
    labels = []
    for make, truth in [(lambda: texture(rng), "good"), (lambda: blob(texture(rng), rng), "blob"),
                        (lambda: scratch(texture(rng), rng), "scratch")]:
        for _ in range(4):
            outputs = model.run(to_tensor(make(), spec))
            assert outputs["probabilities"].shape == (1, 3)
            assert float(outputs["probabilities"].sum()) == pytest.approx(1.0, abs=1e-5)
            labels.append(judge_outputs(model.manifest, outputs).label == truth)
    assert np.mean(labels) >= 0.9


def test_classifier_needs_defect_examples(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    good = write(tmp_path / "good", [texture(rng) for _ in range(14)])
    few = write(tmp_path / "few", [blob(texture(rng), rng) for _ in range(2)])
    with pytest.raises(TrainingDataError, match="at least 3"):
        train_classifier_model(good, {"blob": few}, "c", tmp_path / "build", params=SMALL)
    with pytest.raises(TrainingDataError):
        train_classifier_model(good, {}, "c", tmp_path / "build2", params=SMALL)


def test_classifier_needs_enough_good_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    good = write(tmp_path / "good", [texture(rng) for _ in range(6)])
    blobs = write(tmp_path / "blob", [blob(texture(rng), rng) for _ in range(5)])
    with pytest.raises(TrainingDataError, match="at least 11"):
        train_classifier_model(good, {"blob": blobs}, "c", tmp_path / "build", params=SMALL)
