"""The supervised defect classifier: trains from labelled folders, judges by the manifest's rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.decision import judge_outputs
from models.manifest import ImageInput
from models.runtime import load_model
from vision.anomaly import TrainingDataError
from vision.classifier import train_classifier_model
from vision.classifier.train import CLASSIFIER_ANOMALY_PARAMS
from vision.preprocess import to_tensor

SMALL = replace(CLASSIFIER_ANOMALY_PARAMS, height=128, width=256)


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
    # half the good images train the head, each with its flips; the defects also under 4 lighting ramps
    assert (report.counts["good_variants"], report.counts["blob_variants"], report.counts["scratch_variants"]) == (
        10 * 4, 8 * 8, 8 * 8)
    # the folds join each image with the one most like it, so there are fewer groups than images
    assert 1 < report.metrics["cross_validation_groups"] < 10 + 16
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


def test_classifier_names_thumbnails_among_the_good_parts(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    parts = [texture(rng) for _ in range(16)]
    thumbnails = [cv2.resize(texture(rng), (30, 20), interpolation=cv2.INTER_AREA) for _ in range(2)]
    good = write(tmp_path / "good", parts + thumbnails)
    blobs = write(tmp_path / "blob", [blob(texture(rng), rng) for _ in range(4)])
    report = train_classifier_model(good, {"blob": blobs}, "c", tmp_path / "build", params=SMALL)
    assert report.manifest.training.data["undersized_good_images"] == ["16.png (30x20 px)", "17.png (30x20 px)"]


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


def test_head_pooling_in_onnx_matches_its_numpy_twin(tmp_path: Path) -> None:
    """The head trains on numpy-pooled features and runs on ONNX-pooled ones: both must agree."""
    import onnx

    from models.runtime import create_session
    from vision.anomaly.graph import (
        FEATURES_NAME,
        INPUT_NAME,
        MAP_NAME,
        SCORE_NAME,
        add_classifier_head,
        pooled_features,
        with_features_output,
    )
    from vision.anomaly.train import train_anomaly_model

    rng = np.random.default_rng(9)
    good = write(tmp_path / "good", [texture(rng) for _ in range(10)])
    train_anomaly_model(good, {}, "a", tmp_path / "anomaly", params=SMALL)
    scoring = onnx.load(str(tmp_path / "anomaly" / "model.onnx"))
    onnx.save(with_features_output(scoring), str(tmp_path / "features.onnx"))
    features_session = create_session(tmp_path / "features.onnx", 1)
    image = to_tensor(blob(texture(rng), rng), load_model(tmp_path / "anomaly").manifest.input).astype(np.float32)
    score, features, anomaly_map = features_session.run([SCORE_NAME, FEATURES_NAME, MAP_NAME], {INPUT_NAME: image})
    pooled = pooled_features(features[0], anomaly_map[0], float(score[0]))
    # an identity-like head: the logits are the first three pooled values, so probabilities reveal them
    dims = pooled.shape[0]
    weights = np.zeros((dims, 3), np.float32)
    weights[[0, dims - 1, dims // 2], [0, 1, 2]] = 1.0
    head = add_classifier_head(scoring, np.zeros(dims, np.float32), np.ones(dims, np.float32), weights,
                               np.zeros(3, np.float32))
    onnx.save(head, str(tmp_path / "head.onnx"))
    (probabilities,) = create_session(tmp_path / "head.onnx", 1).run(["probabilities"], {INPUT_NAME: image})
    chosen = pooled[[0, dims - 1, dims // 2]].astype(np.float64)
    expected = np.exp(chosen - chosen.max()) / np.exp(chosen - chosen.max()).sum()
    np.testing.assert_allclose(probabilities[0], expected, atol=1e-4)


def test_threshold_misses_few_defects_and_is_raised_past_a_half_for_an_unsure_model() -> None:
    from vision.classifier.threshold import MAX_FALSE_REJECT, choose_threshold

    rng = np.random.default_rng(5)
    # a confident model: defects near 1, good parts near 0 -> at most 0.5, every defect caught
    defect_score = np.r_[rng.uniform(0.7, 1.0, 100), rng.uniform(0.0, 0.3, 100)]
    is_defect = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    threshold = choose_threshold(defect_score, is_defect)
    assert threshold <= 0.5 and (defect_score[is_defect] >= threshold).all()
    # an unsure six-class model: P(good) below 0.5 even for good parts (1 - P(good) in 0.55..0.75)
    unsure = np.r_[rng.uniform(0.7, 0.95, 100), rng.uniform(0.55, 0.75, 100)]
    threshold = choose_threshold(unsure, is_defect)
    assert threshold > 0.5
    assert (unsure[~is_defect] >= threshold).mean() <= MAX_FALSE_REJECT
