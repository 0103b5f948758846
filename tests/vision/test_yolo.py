"""The ultralytics YOLO classifier (optional ``yolo`` extra): the torchvision CPU shim, training to
ONNX, run-time preprocessing that reproduces ultralytics' own prediction, and the CLI path."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="the optional yolo extra is not installed")

from support import EDGE_INSPECT, PROJECT_ROOT, write_station_config

from edge.training import TrainingCancelled, TrainingError, train
from models.manifest import ImageInput
from models.registry import ModelRegistry
from models.runtime import load_model
from vision.images import read_image_file
from vision.preprocess import fit, to_tensor
from vision.yolo.train import (
    YoloTrainingDataError,
    YoloTrainingReport,
    prepare_ultralytics,
    train_yolo_classifier,
)

IMGSZ = 64


def pattern(kind: str, rng: np.random.Generator, colour: bool = False) -> np.ndarray:
    """A noisy texture; 'stripes' and 'spot' add the defect pattern. Sizes vary, mostly non-square."""
    height, width = (int(v) for v in rng.integers(48, 110, size=2))
    image = np.clip(rng.normal(128, 14, size=(height, width)), 0, 255).astype(np.uint8)
    if kind == "stripes":
        image[:, :: 7] = 240
    elif kind == "spot":
        cv2.circle(image, (width // 2, height // 2), min(height, width) // 4, 20, -1)
    if colour:
        tint = np.array([1.0, 0.8, 0.6])[None, None]
        image = np.clip(image[:, :, None] * tint, 0, 255).astype(np.uint8)
    return image


def write_classes(root: Path, count: int, seed: int = 0) -> dict[str, list[Path]]:
    rng = np.random.default_rng(seed)
    classes: dict[str, list[Path]] = {}
    for kind in ("good", "stripes", "spot"):
        (root / kind).mkdir(parents=True)
        classes[kind] = []
        for index in range(count):
            path = root / kind / f"{kind}{index:02d}.png"
            cv2.imwrite(str(path), pattern(kind, rng, colour=index % 3 == 0))
            classes[kind].append(path)
    return classes


@pytest.fixture(scope="module")
def cropped(tmp_path_factory: pytest.TempPathFactory) -> YoloTrainingReport:
    """A tiny classifier with ultralytics' native preprocessing (shorter side, centre crop)."""
    root = tmp_path_factory.mktemp("yolo")
    classes = write_classes(root / "images", 12)
    broken = root / "images" / "good" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    mask = root / "images" / "spot" / "spot00_mask.png"
    mask.write_bytes(classes["spot"][0].read_bytes())
    return train_yolo_classifier([*classes["good"], broken], {"stripes": classes["stripes"],
                                                            "spot": [*classes["spot"], mask]},
                                 "tiny-yolo", root / "build", epochs=10, imgsz=IMGSZ, batch=8, resize="crop",
                                 seed=3)


def test_nms_shim_makes_torchvision_nms_work() -> None:
    from vision.yolo import torch_cpu_ops

    torch_cpu_ops.install()
    assert torch_cpu_ops.install() in (True, False), "a second call is harmless"
    import torch
    import torchvision

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5], [21, 21, 29, 29.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6])
    # 3 (best) overlaps 0 with IoU 0.95 and 1 with 0.72; 2 and 3 are apart; 4 overlaps 2 with IoU 0.64
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert torchvision.ops.nms(boxes, scores, 0.75).tolist() == [3, 1, 2, 4]
    assert torchvision.ops.batched_nms(boxes, scores, torch.tensor([0, 0, 1, 1, 1]), 0.5).tolist() == [3, 0, 2]
    assert torchvision.ops.nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_manifest_and_report(cropped: YoloTrainingReport) -> None:
    manifest = cropped.manifest
    assert manifest.kind == "vision-classifier" and manifest.labels == ["good", "spot", "stripes"]
    assert manifest.ok_labels == ["good"] and manifest.outputs == {"probabilities": "probabilities"}
    assert 0 < manifest.threshold <= 0.5
    assert {"val_accuracy", "val_miss_rate", "val_false_reject_rate", "val_per_class_accuracy"} <= set(manifest.metrics)
    assert manifest.training.params["epochs"] == 10 and manifest.training.duration_s
    assert manifest.training.data["images"]["good"] == {"train": 10, "val": 2}
    reasons = {path.name: reason for path, reason in ((s.path, s.reason) for s in cropped.skipped)}
    assert "corrupt" in reasons["broken.png"] and "mask" in reasons["spot00_mask.png"]
    assert cropped.weights.is_file() and (cropped.build_dir / "model.onnx").is_file()


def test_onnx_with_our_preprocessing_matches_ultralytics_prediction(cropped: YoloTrainingReport,
                                                                  tmp_path: Path) -> None:
    prepare_ultralytics()
    from PIL import Image
    from ultralytics import YOLO
    from ultralytics.data.augment import classify_transforms

    rng = np.random.default_rng(11)
    probes = []
    for index, (kind, size, colour) in enumerate([("good", (50, 91), False), ("spot", (120, 75), True),
                                                  ("stripes", (64, 64), False), ("good", (33, 140), True),
                                                  ("spot", (97, 61), False)]):
        image = cv2.resize(pattern(kind, rng, colour), (size[1], size[0]), interpolation=cv2.INTER_AREA)
        probes.append(tmp_path / f"probe{index}.png")
        cv2.imwrite(str(probes[-1]), image)

    model = load_model(cropped.build_dir, threads=1)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput) and spec.resize == "short-side-crop"
    reference = YOLO(str(cropped.weights), task="classify")
    order = [list(reference.names.values()).index(label) for label in model.manifest.labels]
    transform = classify_transforms(IMGSZ)
    worst, outputs = 0.0, []
    for path in probes:
        pixels = read_image_file(path).pixels
        tensor = to_tensor(pixels, spec)
        rgb = cv2.cvtColor(pixels if pixels.ndim == 3 else cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR),
                           cv2.COLOR_BGR2RGB)
        expected = transform(Image.fromarray(rgb)).numpy()  # x / 255 there, x * (1 / 255) here: 1 float32 ulp
        assert np.abs(tensor[0] - expected).max() <= 1e-6, f"{path.name}: the input tensor differs"
        ours = np.asarray(model.run(tensor)["probabilities"]).reshape(-1)
        theirs = reference.predict(str(path), imgsz=IMGSZ, device="cpu", verbose=False)[0].probs.data.numpy()
        worst = max(worst, float(np.abs(ours - theirs[order]).max()))
        outputs.append(ours)
    print(f"max |ONNX - ultralytics| = {worst:.2e}")
    assert np.ptp(np.asarray(outputs), axis=0).max() > 1e-3, "the model's output depends on the image"
    assert worst <= 2e-3


def test_too_few_images_say_how_many_are_needed(tmp_path: Path) -> None:
    classes = write_classes(tmp_path / "images", 4)
    with pytest.raises(YoloTrainingDataError, match="at least 5 usable images"):
        train_yolo_classifier(classes["good"], {"spot": classes["spot"]}, "few", tmp_path / "build", epochs=1,
                              imgsz=IMGSZ)
    with pytest.raises(YoloTrainingDataError, match="defect folder"):
        train_yolo_classifier(classes["good"], {}, "none", tmp_path / "build", epochs=1, imgsz=IMGSZ)


def test_missing_ultralytics_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vision.yolo

    monkeypatch.setattr(vision.yolo, "available", lambda: False)
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    with pytest.raises(TrainingError, match=r"pip install -e \.\[yolo\] \(AGPL-3.0\)"):
        train("vision", {"good": [], "spot": []}, "x", registry, trainer="yolo")


def test_a_cancelled_yolo_run_registers_nothing(tmp_path: Path) -> None:
    classes = write_classes(tmp_path / "images", 6)
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    cancel = threading.Event()
    seen: list[str] = []

    def cancel_in_training(fraction: float, message: str) -> None:
        seen.append(message)
        if message.startswith("epoch"):
            cancel.set()

    with pytest.raises(TrainingCancelled):
        train("vision", {"good": classes["good"], "spot": classes["spot"]}, "cancelled", registry,
              progress=cancel_in_training, cancel=cancel, trainer="yolo", options={"epochs": 50, "imgsz": IMGSZ})
    assert any(m.startswith("epoch 1/50") for m in seen), "cancelled while it trained"
    assert registry.names() == [] and not list((tmp_path / "models").glob(".build-*"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_INSPECT, *args], capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT)


def test_train_vision_with_the_yolo_trainer_and_predict(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    classes = write_classes(tmp_path / "images", 10, seed=1)
    folders = [str(tmp_path / "images" / kind) for kind in ("stripes", "spot")]
    wrong = cli("train", "vision", "--good", str(tmp_path / "images" / "good"), "--name", "y", "--epochs", "2",
                "--config", str(config))
    assert wrong.returncode == 2 and "only apply to --trainer yolo" in wrong.stderr
    odd = cli("train", "vision", "--good", str(tmp_path / "images" / "good"), "--defect", folders[0], "--name", "y",
              "--trainer", "yolo", "--imgsz", "100", "--config", str(config))
    assert odd.returncode == 2 and "--imgsz 100: the YOLO input size must be a multiple of 32" in odd.stderr
    trained = cli("train", "vision", "--good", str(tmp_path / "images" / "good"), "--defect", folders[0],
                  "--defect", folders[1], "--name", "tiny-yolo", "--trainer", "yolo", "--epochs", "1",
                  "--imgsz", str(IMGSZ), "--config", str(config))
    assert trained.returncode == 0, trained.stderr
    assert "tiny-yolo v1 registered and promoted" in trained.stdout and "vision-classifier" in trained.stdout
    assert "epoch 1/1" in trained.stderr, "progress is reported per epoch"

    registry = ModelRegistry(tmp_path / "data" / "models", bundled_root=None)
    folder = registry.get("tiny-yolo").folder
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "weights.pt"]
    probes = [classes["good"][0], classes["spot"][1], classes["stripes"][2]]
    predicted = cli("predict", "vision", "--model", "tiny-yolo", "--json", *map(str, probes), "--config", str(config))
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(p) for p in probes]
    manifest = registry.manifest("tiny-yolo")
    model = load_model(folder, threads=1)
    spec = manifest.input
    assert isinstance(spec, ImageInput) and spec.resize == "stretch"
    prepare_ultralytics()
    from ultralytics import YOLO

    reference = YOLO(str(folder / "weights.pt"), task="classify")
    order = [list(reference.names.values()).index(label) for label in manifest.labels]
    for index, (path, line) in enumerate(zip(probes, lines, strict=True)):
        pixels = read_image_file(path).pixels
        probabilities = np.asarray(model.run(to_tensor(pixels, spec))["probabilities"]).reshape(-1)
        assert line["score"] == pytest.approx(1.0 - float(probabilities[0]), abs=1e-5)
        stretched = tmp_path / f"stretched{index}.png"  # what ultralytics was trained on
        cv2.imwrite(str(stretched), fit(pixels if pixels.ndim == 3 else pixels[:, :, None], spec))
        theirs = reference.predict(str(stretched), imgsz=IMGSZ, device="cpu", verbose=False)[0].probs.data.numpy()
        assert np.abs(probabilities - theirs[order]).max() <= 2e-3
        assert line["decision"] in ("OK", "NG") and line["label"] in manifest.labels
        assert line["decision"] == ("NG" if line["score"] >= manifest.threshold else "OK")


def test_short_side_crop_needs_a_square_input() -> None:
    with pytest.raises(ValueError, match="square"):
        ImageInput(height=64, width=96, channels=3, resize="short-side-crop")


def test_undecodable_files_stay_a_clear_error_once_ultralytics_is_imported() -> None:
    """ultralytics replaces PIL.Image.open on import and, on data PIL cannot identify, imports pi_heif:
    the training process (and any process that imported it) must still report a plain image error."""
    prepare_ultralytics()
    import ultralytics  # noqa: F401

    from vision.images import ImageError, decode_image

    with pytest.raises(ImageError, match="not a readable image"):
        decode_image(b"these bytes are no image")
