"""The good-only anomaly model: training, the fused ONNX graph, bad input, integrity."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from models.evaluation import threshold_for_false_reject
from models.manifest import ManifestError
from models.runtime import create_session, load_model
from vision.anomaly import AnomalyParams, TrainingDataError, train_anomaly_model
from vision.anomaly.calibration import PositionStats, most_similar, nearest_distances, normalised_scores
from vision.anomaly.features import FeatureExtractor, augmented_variants, image_input, lighting_variants
from vision.anomaly.gaussian import GaussianTerm, fit_position_gaussians, fit_with_held_out_maps, mahalanobis_map
from vision.anomaly.graph import SearchHead, feature_graph, scoring_graph
from vision.anomaly.images import image_files
from vision.anomaly.train import _calibration_maps
from vision.inspector import VisionInspector
from vision.preprocess import to_tensor

DATASET = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "magnetic-tile"
SMALL = AnomalyParams(height=128, width=256, bank_size=400, calibration_images=20)


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A grey surface with vertical grain, like a ground tile."""
    columns = rng.normal(120, 12, size=width)
    image = np.tile(columns, (height, 1)) + rng.normal(0, 6, size=(height, width))
    return np.clip(cv2.GaussianBlur(image, (3, 3), 0), 0, 255).astype(np.uint8)


def with_defect(image: np.ndarray) -> np.ndarray:
    damaged = image.copy()
    h, w = damaged.shape[:2]
    cv2.circle(damaged, (w // 2, h // 2), max(4, min(h, w) // 5), 20, -1)
    return damaged


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(1)
    files = []
    for index in range(10):
        height, width = (int(v) for v in rng.integers(90, 260, size=2))
        image = texture(rng, height, width)
        if index % 3 == 0:  # colour files among the grey ones
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        path = folder / f"good_{index}.{'png' if index % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        files.append(path)
    cv2.imwrite(str(folder / "tiny.png"), texture(rng, 40, 30))  # far smaller than the model input
    files.append(folder / "tiny.png")
    return files


@pytest.fixture(scope="module")
def trained(good_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    folder = good_files[0].parent
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.png").write_text("hello", encoding="utf-8")
    build = tmp_path_factory.mktemp("build")
    progress: list[float] = []
    report = train_anomaly_model([*good_files, folder / "broken.jpg", folder / "notes.png"], {}, "demo-anomaly",
                                 build, params=SMALL, progress=lambda f, _: progress.append(f))
    assert progress[0] == 0.0 and progress[-1] == 1.0
    return build, report


@pytest.fixture(scope="module")
def trained_on_ordinary_parts(good_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model from the good files without the tiny one: a 40x30 image trains as a blurred part, and
    with its flipped and relit copies it loosens the threshold of a 10-image model to where the
    defect below scores just under it (that file is for the bad-input checks)."""
    build = tmp_path_factory.mktemp("build-ordinary")
    train_anomaly_model([f for f in good_files if f.name != "tiny.png"], {}, "demo-anomaly", build, params=SMALL)
    return build


def test_the_manifest_records_the_operating_point_and_the_held_out_scores(trained_on_ordinary_parts: Path) -> None:
    """The threshold is set for a stated target from held-out scores, which the manifest keeps, so a
    threshold for another target comes from them without training again."""
    manifest = load_model(trained_on_ordinary_parts, threads=1).manifest
    point = manifest.metrics["operating_point"]
    held_out = manifest.metrics["calibration_good_scores"]
    assert point["target"]["false_reject"] == SMALL.calibration_false_reject and point["target"]["miss"] is None
    assert point["threshold"] == pytest.approx(manifest.threshold, abs=1e-4) and point["good_parts"] == len(held_out)
    low, high = point["false_reject_interval"]
    assert 0 <= low <= point["expected_false_reject"] <= high <= 1
    assert not point["supported"] and "10 good parts cannot show" in point["warning"]  # 19 are needed for 5 %
    assert manifest.threshold <= max(held_out) + 1e-3  # never above every held-out good part
    looser = threshold_for_false_reject(held_out, 0.3, normal_tail=True)
    assert looser.threshold < manifest.threshold and looser.supported


def test_one_call_gives_decision_score_map_defect_box_and_a_heat_map_at_the_part_s_size(
        trained_on_ordinary_parts: Path) -> None:
    inspector = VisionInspector(load_model(trained_on_ordinary_parts, threads=1))
    part = texture(np.random.default_rng(8), 180, 300)
    bad = inspector.judge(with_defect(part))
    assert bad.decision == "NG" and bad.score is not None and bad.anomaly_map is not None
    assert bad.defect_region is not None and bad.image_size == (300, 180)
    heat = bad.heatmap()
    assert heat is not None and heat.shape == (180, 300, 3) and heat.dtype == np.uint8
    good = inspector.judge(part)
    assert good.decision == "OK" and good.defect_region is None


def test_training_produces_a_model_that_flags_a_defect(trained_on_ordinary_parts: Path) -> None:
    build = trained_on_ordinary_parts
    model = load_model(build, threads=2)
    assert model.manifest.kind == "vision-anomaly" and model.manifest.version == 1
    # the per-position Gaussians are part of the model, and the manifest says so
    assert model.manifest.metrics["position_gaussian_weight"] == SMALL.position_gaussian > 0
    rng = np.random.default_rng(7)
    good = texture(rng, 200, 150)
    good_out = model.run(to_tensor(good, model.manifest.input))
    bad_out = model.run(to_tensor(with_defect(good), model.manifest.input))
    assert good_out["score"].shape == (1,) and good_out["score"].dtype == np.float32
    assert bad_out["anomaly_map"].shape == (1, *SMALL.map_shape)
    assert float(bad_out["score"][0]) > float(good_out["score"][0]) + 1.0
    assert float(bad_out["score"][0]) >= model.manifest.threshold
    # the heat map points at the defect (centre of the image)
    peak = np.unravel_index(int(np.argmax(bad_out["anomaly_map"][0])), SMALL.map_shape)
    assert abs(peak[0] - SMALL.map_shape[0] / 2) <= 3 and abs(peak[1] - SMALL.map_shape[1] / 2) <= 3


def test_images_far_smaller_than_the_training_parts_are_not_judged(trained_on_ordinary_parts: Path) -> None:
    """Scaled up to the input, a thumbnail of a part is a blur the model never saw: INVALID with the
    reason, not a score. The bound comes from the training images' sizes kept in the manifest."""
    model = load_model(trained_on_ordinary_parts, threads=1)
    size = model.manifest.training.data["image_size"]
    assert 90 <= size["min_width"] <= size["median_width"] < 260 and 90 <= size["median_height"] < 260
    inspector = VisionInspector(model)
    rng = np.random.default_rng(8)
    least_w, least_h = -(-size["median_width"] // 4), -(-size["median_height"] // 4)
    for height, width in ((least_h - 1, 200), (200, least_w - 1), (1, 1000), (4, 4)):
        result = inspector.judge(with_defect(texture(rng, max(height, 1), max(width, 1))))
        assert result.decision == "INVALID" and result.score is None, (height, width)
        assert f"{width}x{height} px" in str(result.reason) and "training images' median size" in str(result.reason)
    judged = inspector.judge(with_defect(texture(rng, least_h, least_w)))
    assert judged.decision in {"OK", "NG"} and judged.score is not None


def test_corrupt_files_are_skipped_and_reported(trained: tuple[Path, object]) -> None:
    _, report = trained
    skipped = {s.path.name: s.reason for s in report.skipped}  # type: ignore[attr-defined]
    assert set(skipped) == {"broken.jpg", "notes.png"}
    assert report.counts["good"] == 11  # type: ignore[attr-defined]
    # few images: each also flipped three ways and lit by four ramps
    assert report.counts["good_variants"] == 11 * 8  # type: ignore[attr-defined]
    manifest = json.loads((trained[0] / "manifest.json").read_text())
    assert manifest["training"]["data"]["skipped_files"] == 2
    # the 40x30 file is trained on, and named as far smaller than the others
    assert manifest["training"]["data"]["undersized_good_images"] == ["tiny.png (30x40 px)"]


def test_lighting_ramps_brighten_one_side_and_stay_in_range() -> None:
    tensor = np.full((1, 1, 8, 16), 0.5, np.float32)
    tensor[..., 0, 0] = 0.95  # a highlight that the ramp must not push past white
    left, right, top, bottom = lighting_variants(tensor, 0.4)
    assert all(v.shape == tensor.shape and v.dtype == np.float32 for v in (left, right, top, bottom))
    assert left[0, 0, 4, 1] > 0.5 + 0.15 and left[0, 0, 4, -1] < 0.5 - 0.15  # brighter on the left
    assert right[0, 0, 4, -1] > right[0, 0, 4, 0] and bottom[0, 0, -1, 4] > bottom[0, 0, 0, 4]
    assert top[0, 0, 0, 4] > top[0, 0, -1, 4]
    assert max(float(v.max()) for v in (left, right, top, bottom)) <= 1.0
    assert lighting_variants(tensor, 0.0) == []
    variants = augmented_variants(tensor, flips=True, lighting_ramp=0.4)
    assert len(variants) == 8 and variants[0] is tensor


def test_too_few_good_images_is_a_clear_error(good_files: list[Path], tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="at least 8"):
        train_anomaly_model(good_files[:3], {}, "few", tmp_path / "build", params=SMALL)
    broken, tiny = tmp_path / "broken.jpg", tmp_path / "tiny.png"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    cv2.imwrite(str(tiny), np.zeros((5, 5), np.uint8))
    with pytest.raises(TrainingDataError) as failure:  # says which files it could not use, and why
        train_anomaly_model([*good_files[:3], broken, tiny], {}, "few", tmp_path / "build2", params=SMALL)
    message = str(failure.value)
    assert "3 usable good image(s) out of 5" in message and "broken.jpg (" in message
    assert "tiny.png (image is only 5x5 px" in message


def test_manifest_and_onnx_mismatch_is_refused(trained: tuple[Path, object], tmp_path: Path) -> None:
    build, _ = trained
    copy = tmp_path / "model"
    copy.mkdir()
    for item in build.iterdir():
        copy.joinpath(item.name).write_bytes(item.read_bytes())
    with copy.joinpath("model.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ManifestError, match="sha256"):
        load_model(copy)


@pytest.mark.parametrize("with_gaussians", [False, True], ids=["bank", "bank+gaussians"])
def test_onnx_score_equals_numpy_reference(good_files: list[Path], tmp_path: Path, with_gaussians: bool) -> None:
    params = AnomalyParams(height=96, width=128, map_sigma=1.0)
    spec = image_input(params)
    extractor = FeatureExtractor(feature_graph(params), tmp_path, threads=1)
    images = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in good_files[:4]]
    features = [extractor(to_tensor(image, spec)) for image in images]
    rng = np.random.default_rng(3)
    stacked = np.concatenate(features[1:])
    mean = stacked.mean(axis=0)
    projection = np.linalg.qr(rng.standard_normal((stacked.shape[1], 16)))[0].astype(np.float32)
    bank = ((stacked[rng.choice(len(stacked), 100, replace=False)] - mean) @ projection).astype(np.float32)
    stats = PositionStats(rng.uniform(0.5, 2, params.map_shape).astype(np.float32),
                          rng.uniform(0.5, 2, params.map_shape).astype(np.float32))
    gaussian_projection = np.linalg.qr(rng.standard_normal((stacked.shape[1], 8)))[0].astype(np.float32)
    good_projected = np.stack([((f - mean) @ gaussian_projection) for f in features[1:]]).astype(np.float32)
    gaussian_stats = PositionStats(rng.uniform(0, 2, params.map_shape).astype(np.float32),
                                   rng.uniform(0.5, 2, params.map_shape).astype(np.float32))
    term = GaussianTerm(gaussian_projection, fit_position_gaussians(good_projected, params.map_shape, 0.1),
                        gaussian_stats.mean, gaussian_stats.scale, 0.3) if with_gaussians else None
    head = SearchHead(mean.astype(np.float32), projection, bank, stats.mean, stats.scale, term)
    path = tmp_path / "scoring.onnx"
    onnx.save(scoring_graph(params, head), str(path))
    if term is not None:  # the file holds each cell's triangle at half precision, no square float32 matrices
        stored = {t.name.rsplit("_", 1)[0]: t for t in onnx.load(str(path)).graph.initializer}
        assert stored["gaussian_triangles"].data_type == onnx.TensorProto.FLOAT16
        assert list(stored["gaussian_triangles"].dims) == [int(np.prod(params.map_shape)), 8 * 9 // 2]
    session = create_session(path, threads=1)
    test_image = with_defect(images[0] if images[0].ndim == 2 else cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY))
    score, heat_map = session.run(["score", "anomaly_map"], {"image": to_tensor(test_image, spec)})
    centred = (extractor(to_tensor(test_image, spec)) - mean).astype(np.float32)
    distances = nearest_distances(centred @ projection, bank).reshape(params.map_shape)
    blend = None if term is None else (
        term, mahalanobis_map(centred @ term.projection, term.gaussians).reshape(1, *params.map_shape))
    expected = normalised_scores(distances[None], stats, params.map_sigma, blend)[0]
    if term is not None:  # the Gaussian term moves the score: the comparison above is not the bank's alone
        assert abs(float(expected) - float(normalised_scores(distances[None], stats, params.map_sigma)[0])) > 1e-2
    assert score.shape == (1,)
    assert float(score[0]) == pytest.approx(float(expected), rel=1e-3, abs=1e-3)
    assert float(heat_map.max()) == pytest.approx(float(score[0]), rel=1e-5)


@pytest.mark.skipif(not DATASET.is_dir(), reason="development data (../shared/datasets) not present")
def test_real_tiles_separate_good_from_defective(tmp_path: Path) -> None:
    good = sorted((DATASET / "free").glob("*.jpg"))
    report = train_anomaly_model(good[:12], {}, "tiles", tmp_path / "build",
                                 params=AnomalyParams(bank_size=1500, calibration_images=12))
    model = load_model(tmp_path / "build", threads=2)

    def score(path: Path) -> float:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        return float(model.run(to_tensor(image, model.manifest.input))["score"][0])

    unseen_good = [score(p) for p in good[-10:]]
    breaks = [score(p) for p in sorted((DATASET / "break").glob("*.jpg"))[:10]]
    assert np.mean(breaks) > np.mean(unseen_good)
    assert report.metrics["operating_point"]["good_parts"] == 12  # every calibration image held out


def test_image_files_leave_out_masks(tmp_path: Path) -> None:
    for name in ["a.jpg", "a.png", "b.png", "c_mask.png", "c.bmp", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in image_files(tmp_path)] == ["a.jpg", "b.png", "c.bmp"]


def test_masks_given_as_training_files_are_skipped(good_files: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "with_masks"
    folder.mkdir()
    files = []
    for index, source in enumerate(good_files[:9]):
        photo = folder / f"part_{index}.jpg"
        cv2.imwrite(str(photo), cv2.imread(str(source), cv2.IMREAD_UNCHANGED))
        mask = folder / f"part_{index}.png"
        cv2.imwrite(str(mask), np.zeros((20, 20), np.uint8))
        files += [photo, mask]
    report = train_anomaly_model(files, {}, "masked", tmp_path / "build", params=SMALL)
    assert report.counts["good"] == 9
    assert sorted(s.path.name for s in report.skipped) == sorted(f"part_{i}.png" for i in range(9))
    assert all("mask" in s.reason for s in report.skipped)


def test_most_similar_puts_the_image_first_and_its_twin_next() -> None:
    rng = np.random.default_rng(4)
    features = [rng.normal(size=(50, 8)).astype(np.float32) + rng.normal(size=8).astype(np.float32) * 3
                for _ in range(6)]
    features.append(features[2] + 0.01)  # image 6 is a near-copy of image 2
    assert most_similar(features, [2, 6], 1)[0].tolist() == [2, 6]
    assert most_similar(features, [2, 6], 1)[1].tolist() == [6, 2]


def test_calibration_of_parts_photographed_twice_is_that_of_new_parts() -> None:
    """Scored beside its own second photograph, a good part looks perfect, and a threshold set from
    such scores rejects new parts; calibration leaves each image's most similar image out too."""
    rng = np.random.default_rng(11)
    map_shape = (2, 4)
    parts = [rng.normal(size=(8, 6)).astype(np.float32) + rng.normal(size=6).astype(np.float32) for _ in range(20)]
    twice = [shot for part in parts for shot in (part, part + rng.normal(0, 0.01, part.shape).astype(np.float32))]
    indices = list(range(0, 40, 2))

    def maps(features: list[np.ndarray], chosen: list[int], exclude_similar: int) -> np.ndarray:
        bank = np.concatenate(features)
        owners = np.repeat(np.arange(len(features)), 8)
        return _calibration_maps(features, chosen, bank, owners, map_shape, exclude_similar)

    naive, careful = maps(twice, indices, 0), maps(twice, indices, 5)  # 40 images: one neighbour left out
    new_parts = maps(parts, list(range(20)), 0)  # each part alone: what an unseen part looks like
    assert naive.mean() < 0.05 * new_parts.mean()
    assert careful.mean() == pytest.approx(new_parts.mean(), rel=0.05)


def test_position_gaussians_measure_the_mahalanobis_distance_at_each_cell() -> None:
    rng = np.random.default_rng(5)
    map_shape, dims = (3, 4), 6
    scales = rng.uniform(0.2, 3.0, dims)  # channels of very different spread
    features = (rng.standard_normal((400, 12, dims)) * scales).astype(np.float32)
    gaussians = fit_position_gaussians(features, map_shape, shrinkage=0.0)
    query = np.zeros((12, dims), np.float32)
    query[5] = 2.0 * scales  # two standard deviations out on every channel, at one cell
    distances = mahalanobis_map(query, gaussians)
    samples = features[:, [0, 1, 2, 4, 5, 6, 8, 9, 10]].reshape(-1, dims)  # cell 5's 3x3 neighbourhood
    diff = query[5] - samples.mean(axis=0)
    exact = float(np.sqrt(diff @ np.linalg.inv(np.cov(samples.T)) @ diff))
    assert float(distances[5]) == pytest.approx(exact, rel=1e-3)
    assert float(distances[5]) == pytest.approx(2.0 * np.sqrt(dims), rel=0.1)
    assert float(np.delete(distances, 5).max()) < 1.0  # the other cells sit at the mean


def test_calibration_maps_come_from_gaussians_fitted_without_the_image() -> None:
    """An unusual good part must look unusual to calibration, as an unseen one would."""
    rng = np.random.default_rng(6)
    map_shape = (2, 2)
    per_image = [rng.standard_normal((2, 4, 3)).astype(np.float32) for _ in range(10)]
    per_image[3][0, 2] += 6.0  # one part differs at one cell (its first copy)
    every_image, held_out = fit_with_held_out_maps(per_image, [3], map_shape, shrinkage=0.1)
    in_sample = mahalanobis_map(per_image[3][0], every_image)
    reference = fit_position_gaussians(np.concatenate(per_image), map_shape, 0.1)  # the same fit, directly
    assert np.allclose(every_image.whitening, reference.whitening, rtol=2e-3, atol=1e-6)  # float16 rounding
    assert held_out.shape == (1, *map_shape)
    assert float(held_out[0].reshape(-1)[2]) > 1.25 * float(in_sample[2])  # in-sample it hides itself
