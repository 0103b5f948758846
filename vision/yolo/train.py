"""Train an ultralytics YOLO classifier (from ``yolo11n-cls.yaml``, no pretrained weights) on good
and labelled defect images, export it to ONNX and write a manifest that the runtime judges exactly
like the light-head classifier (``models.decision.judge_outputs``: NG when 1 - P(good) >= threshold).

ultralytics is AGPL-3.0 and only installed with the optional ``yolo`` extra; nothing here runs on
the inspection path. Everything works offline: no weights, fonts or packages are downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from models.decision import judge_outputs
from models.manifest import ONNX_FILE, ImageInput, Manifest, TrainingInfo, sha256_of, write_manifest
from models.runtime import load_model
from vision.anomaly.images import SkippedFile, read_part_images
from vision.classifier.threshold import RULE as THRESHOLD_RULE
from vision.classifier.threshold import choose_threshold
from vision.preprocess import fit, to_tensor
from vision.yolo import INSTALL_HINT, available, imgsz_problem
from vision.yolo.onnx_labels import reorder_outputs

Progress = Callable[[float, str], None]
Resize = Literal["stretch", "crop"]
GOOD_LABEL = "good"
ARCHITECTURE = "yolo11n-cls.yaml"
WEIGHTS_FILE = "weights.pt"  # the trained PyTorch weights, kept beside the ONNX for fine-tuning later
MIN_IMAGES_PER_CLASS = 5  # at least 1 for validation and 4 to train
VAL_FRACTION = 0.2
# ultralytics' classification augmentation except random erasing and RandAugment: a defect must stay
# in the image for its label to be true, and a small set trained from scratch must converge in tens of epochs
AUGMENTATION: dict[str, Any] = {"erasing": 0.0, "auto_augment": None}
MAX_REPEAT = 8  # rare classes are repeated (up to 8 times, at most to the largest class) in every epoch


class YoloTrainingDataError(ValueError):
    """The images cannot train a YOLO classifier (too few per class, no defect label, ...)."""


@dataclass
class YoloTrainingReport:
    manifest: Manifest
    build_dir: Path
    weights: Path
    skipped: list[SkippedFile]
    counts: dict[str, dict[str, int]]
    timings_s: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Split:
    train: dict[str, list[npt.NDArray[np.uint8]]]
    val: dict[str, list[npt.NDArray[np.uint8]]]


def train_yolo_classifier(good: list[Path], defects: dict[str, list[Path]], name: str, build_dir: Path, *,
                          epochs: int = 30, imgsz: int = 128, batch: int = 16, threads: int = 2,
                          resize: Resize = "stretch", balance: bool = True, progress: Progress | None = None,
                          seed: int = 0) -> YoloTrainingReport:
    """Write ``build_dir/model.onnx`` (``probabilities`` over [good, *sorted defect labels]), the
    weights and the manifest. Raises YoloTrainingDataError for unusable data, RuntimeError without
    ultralytics.

    ``resize``: "stretch" scales every image to imgsz x imgsz before ultralytics sees it (the whole
    part stays visible; ultralytics' own resize and centre crop are then no-ops); "crop" keeps
    ultralytics' native preprocessing (shorter side to imgsz, centre square cut out), which drops
    the ends of elongated parts. Either way the manifest reproduces it exactly at run time.
    ``balance`` repeats the training images of rare classes (ultralytics' classification loss has no
    class weights), so a few defect images are not drowned by hundreds of good ones.
    """
    if not available():
        raise RuntimeError(f"YOLO training needs ultralytics: {INSTALL_HINT}")
    report: Progress = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    build_dir.mkdir(parents=True, exist_ok=True)
    labels = [GOOD_LABEL, *sorted(defects)]
    if problem := imgsz_problem(imgsz):
        raise ValueError(problem)
    if not defects:
        raise YoloTrainingDataError("a YOLO classifier needs at least one defect folder besides the good images")
    if GOOD_LABEL in defects:
        raise YoloTrainingDataError(f"'{GOOD_LABEL}' is the label of the good images; rename that defect folder")

    report(0.0, "reading images")
    skipped: list[SkippedFile] = []
    folders = [(GOOD_LABEL, good), *sorted(defects.items())]
    by_label = {label: read_part_images(paths, skipped) for label, paths in folders}
    too_few = [f"{label} ({len(images)})" for label, images in by_label.items() if len(images) < MIN_IMAGES_PER_CLASS]
    if too_few:
        raise YoloTrainingDataError(
            f"every class needs at least {MIN_IMAGES_PER_CLASS} usable images (1 to validate, 4 to train) for a "
            f"YOLO classifier; too few: {', '.join(too_few)}")
    split = _split(by_label, seed)
    spec = ImageInput(tensor_name="images", height=imgsz, width=imgsz, channels=3,
                      resize="stretch" if resize == "stretch" else "short-side-crop", interpolation="pil-bilinear",
                      scale=1.0 / 255.0, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    timings = {"read_s": time.perf_counter() - started}

    work = build_dir / ".yolo-work"  # inside the build folder, so a cancelled run's clean-up removes it too
    shutil.rmtree(work, ignore_errors=True)
    try:
        _write_dataset(split, work / "data", spec if resize == "stretch" else None, balance)
        report(0.05, f"training {ARCHITECTURE} for {epochs} epochs")
        weights = _fit(work, epochs=epochs, imgsz=imgsz, batch=batch, threads=threads, seed=seed,
                       progress=lambda f, m: report(0.05 + 0.8 * f, m))
        timings["train_s"] = time.perf_counter() - started - timings["read_s"]
        report(0.85, "exporting to ONNX")
        exported, class_names = _export(weights, imgsz)
        onnx_path = build_dir / ONNX_FILE
        shutil.copyfile(exported, onnx_path)
        shutil.copyfile(weights, build_dir / WEIGHTS_FILE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if sorted(class_names) != sorted(labels):
        raise RuntimeError(f"the trained model's classes {class_names} are not the labels {labels}")
    output = reorder_outputs(onnx_path, [class_names.index(label) for label in labels])
    draft = Manifest(
        name=name, version=1, kind="vision-classifier",
        description=f"Defect classifier: ultralytics {ARCHITECTURE} trained from scratch, exported to ONNX",
        onnx_sha256=sha256_of(onnx_path), input=spec, outputs={"probabilities": output},
        labels=labels, ok_labels=[GOOD_LABEL], threshold=0.5)
    write_manifest(build_dir, draft)

    report(0.9, "validating the ONNX model")
    probabilities = _validation_probabilities(build_dir, split.val, labels, threads)
    truth = np.concatenate([np.full(len(split.val[label]), i) for i, label in enumerate(labels)])
    threshold = choose_threshold(1.0 - probabilities[:, 0], truth != 0)
    metrics = validation_metrics(draft.model_copy(update={"threshold": threshold}), probabilities, truth)
    timings["total_s"] = time.perf_counter() - started
    counts = {label: {"train": len(split.train[label]), "val": len(split.val[label])} for label in labels}
    manifest = draft.model_copy(update={
        "threshold": threshold, "metrics": metrics,
        "training": TrainingInfo(
            data={"images": counts, "skipped_files": len(skipped),
                  "train_repeats": repeats({k: v["train"] for k, v in counts.items()}) if balance else {}},
            duration_s=round(timings["total_s"], 2),
            tool="vision.yolo.train_yolo_classifier",
            params=_params(epochs=epochs, imgsz=imgsz, batch=batch, threads=threads, seed=seed, resize=resize,
                           balance=balance))})
    write_manifest(build_dir, manifest)
    report(1.0, "done")
    return YoloTrainingReport(manifest, build_dir, build_dir / WEIGHTS_FILE, skipped, counts, timings, metrics)


def _split(by_label: dict[str, list[npt.NDArray[np.uint8]]], seed: int) -> _Split:
    """Stratified, seeded: VAL_FRACTION of every class (at least one image) validates."""
    rng = np.random.default_rng(seed)
    train: dict[str, list[npt.NDArray[np.uint8]]] = {}
    val: dict[str, list[npt.NDArray[np.uint8]]] = {}
    for label, images in by_label.items():
        order = rng.permutation(len(images))
        held = max(1, round(VAL_FRACTION * len(images)))
        val[label] = [images[i] for i in sorted(order[:held])]
        train[label] = [images[i] for i in sorted(order[held:])]
    return _Split(train, val)


def repeats(counts: dict[str, int]) -> dict[str, int]:
    """How often each class's training images appear per epoch to even out rare classes."""
    largest = max(counts.values())
    return {label: max(1, min(MAX_REPEAT, largest // max(1, count))) for label, count in counts.items()}


def _write_dataset(split: _Split, root: Path, stretch: ImageInput | None, balance: bool) -> None:
    """ultralytics' classification layout, as lossless PNGs of our own decoding (``root/train/good/0.png``),
    with ``stretch`` already scaled to the input size by the run time's own code; with ``balance``
    rare classes' training images are linked several times."""
    repeat = repeats({label: len(images) for label, images in split.train.items()}) if balance else {}
    for part, by_label in (("train", split.train), ("val", split.val)):
        for label, images in by_label.items():
            folder = root / part / label
            folder.mkdir(parents=True)
            for index, pixels in enumerate(images):
                if stretch is not None:  # the resize is per channel, so BGR order and grey are kept as they are
                    pixels = fit(pixels if pixels.ndim == 3 else pixels[:, :, None], stretch)
                path = folder / f"{index:05d}.png"
                if not cv2.imwrite(str(path), pixels):
                    raise OSError(f"cannot write training image {path}")
                for copy in range(1, repeat.get(label, 1) if part == "train" else 1):
                    _link_or_copy(path, folder / f"{index:05d}-{copy}.png")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(source, target)


def prepare_ultralytics(config_dir: Path | None = None) -> None:
    """Offline settings and the torchvision CPU shim; call before importing ultralytics."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir or Path(tempfile.gettempdir()) / "edge-inspect-yolo"))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    from vision.yolo import torch_cpu_ops

    torch_cpu_ops.install()


def _fit(work: Path, *, epochs: int, imgsz: int, batch: int, threads: int, seed: int, progress: Progress) -> Path:
    prepare_ultralytics()
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(max(1, threads))
    model = YOLO(ARCHITECTURE, task="classify")

    def epoch_done(trainer: Any) -> None:
        if trainer.epoch >= trainer.epochs:  # ultralytics' final validation of the best weights
            return
        accuracy = (trainer.metrics or {}).get("metrics/accuracy_top1")
        shown = "" if accuracy is None else f", validation top-1 {accuracy:.3f}"
        progress((trainer.epoch + 1) / trainer.epochs, f"epoch {trainer.epoch + 1}/{trainer.epochs}{shown}")

    model.add_callback("on_fit_epoch_end", epoch_done)
    model.train(data=str(work / "data"), epochs=epochs, imgsz=imgsz, batch=batch, workers=0, device="cpu",
                seed=seed, deterministic=True, plots=False, pretrained=False, amp=False, project=str(work / "runs"),
                name="train", exist_ok=True, verbose=False, val=True,
                **AUGMENTATION)
    trainer = model.trainer
    best = Path(trainer.best) if trainer is not None else Path()
    if not best.is_file():
        raise RuntimeError(f"ultralytics finished without writing weights ({best})")
    return best


def _export(weights: Path, imgsz: int) -> tuple[Path, list[str]]:
    """The ONNX file (opset 17, fixed input size, softmax output) and the class names in output order."""
    from ultralytics import YOLO

    model = YOLO(str(weights), task="classify")
    names = [str(model.names[i]) for i in range(len(model.names))]
    exported = model.export(format="onnx", imgsz=imgsz, opset=17, dynamic=False, simplify=True, device="cpu")
    return Path(str(exported)), names


def _validation_probabilities(build_dir: Path, val: dict[str, list[npt.NDArray[np.uint8]]], labels: list[str],
                              threads: int) -> npt.NDArray[np.float64]:
    """Probabilities of the held-out images through the run-time path (to_tensor + onnxruntime)."""
    model = load_model(build_dir, threads=threads, warm_up=False)
    spec = model.manifest.input
    assert isinstance(spec, ImageInput)
    rows = [np.asarray(model.run(to_tensor(image, spec))["probabilities"], dtype=np.float64).reshape(-1)
            for label in labels for image in val[label]]
    return np.asarray(rows)


def validation_metrics(manifest: Manifest, probabilities: npt.NDArray[np.float64],
                       truth: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Accuracy by the manifest's decision rule, misses, false rejects and per-class accuracy."""
    judged = [judge_outputs(manifest, {"probabilities": row}) for row in probabilities]
    predicted = np.array([manifest.labels.index(j.label) for j in judged])
    ng = np.array([j.decision == "NG" for j in judged])
    is_defect = truth != 0
    return {
        "val_accuracy": round(float((predicted == truth).mean()), 4),
        "val_argmax_accuracy": round(float((probabilities.argmax(axis=1) == truth).mean()), 4),
        "val_miss_rate": round(float((~ng[is_defect]).mean()), 4),
        "val_false_reject_rate": round(float(ng[~is_defect].mean()), 4),
        "val_per_class_accuracy": {label: round(float((predicted[truth == i] == i).mean()), 4)
                                   for i, label in enumerate(manifest.labels)},
        "val_images": len(truth),
    }


def _params(**values: Any) -> dict[str, Any]:
    import torch
    import ultralytics

    return {**values, "architecture": ARCHITECTURE, "pretrained": False, "val_fraction": VAL_FRACTION,
            "augmentation": "ultralytics defaults, " + ", ".join(f"{k}={v}" for k, v in AUGMENTATION.items()),
            "ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "threshold_rule": THRESHOLD_RULE}
