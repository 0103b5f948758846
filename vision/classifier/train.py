"""Train the supervised defect classifier: good parts and labelled defect folders -> ONNX + manifest."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from models.evaluation import Target, choose_operating_point, operating_point_at, operating_point_summary
from models.manifest import ONNX_FILE, Manifest, TrainingInfo, sha256_of, write_manifest
from models.runtime import create_session
from vision.anomaly.features import augmented_variants, image_input
from vision.anomaly.graph import (
    FEATURES_NAME,
    INPUT_NAME,
    MAP_NAME,
    PROBABILITIES_NAME,
    SCORE_NAME,
    add_classifier_head,
    pooled_features,
    with_features_output,
)
from vision.anomaly.images import (
    SkippedFile,
    image_size_summary,
    mask_skips,
    read_part_images,
    read_training_images,
    split_masks,
    undersized_images,
)
from vision.anomaly.params import AnomalyParams
from vision.anomaly.train import MIN_GOOD_IMAGES, Progress, TrainingDataError, TrainingReport, train_anomaly_model
from vision.classifier.folds import FOLDS, out_of_fold_probabilities, similar_image_groups
from vision.classifier.softmax import fit_softmax
from vision.classifier.threshold import MAX_FALSE_REJECT, MAX_MISS_RATE, RULE, choose_threshold
from vision.preprocess import to_tensor

MIN_IMAGES_PER_LABEL = 3
GOOD_LABEL = "good"
FloatArray = npt.NDArray[np.float32]


# The head's anomaly model is the bank alone: with the per-position Gaussians blended into its map the
# head missed 6.1 % of defects on the images split instead of 0.8 % (accuracy 0.942 against 0.964) and
# was no better on new parts (bench/RESULTS-vision.md, 2026-12-02).
CLASSIFIER_ANOMALY_PARAMS = AnomalyParams(position_gaussian=0.0)


def train_classifier_model(good: list[Path], defects: dict[str, list[Path]], name: str, build_dir: Path, *,
                           threads: int = 2, progress: Progress | None = None,
                           params: AnomalyParams | None = None, target: Target | None = None) -> TrainingReport:
    """Build ``build_dir/model.onnx`` (``probabilities`` over [good, *defect labels], plus the anomaly
    map) and its manifest.

    ``target``: the operating point the threshold is set for on the cross-validated probabilities;
    without one, vision.classifier.threshold's rule (at most 2 % misses within 5 % false rejects).

    Half of the good images build a good-only anomaly model; its score and the pooled backbone
    features of the other half and of the defect images train a softmax head on top of it, so
    the head sees anomaly scores of good parts it has not memorised, as at run time.
    """
    params = params or CLASSIFIER_ANOMALY_PARAMS
    report_progress: Progress = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    build_dir.mkdir(parents=True, exist_ok=True)
    skipped: list[SkippedFile] = []
    good_paths, good_masks = split_masks(list(good))
    skipped.extend(mask_skips(good_masks))
    needed = MIN_GOOD_IMAGES + MIN_IMAGES_PER_LABEL
    if len(good_paths) < needed:
        raise TrainingDataError(f"only {len(good_paths)} good image file(s); at least {needed} are needed to "
                                "train a classifier (half build its anomaly model, half train its head)")
    order = np.random.default_rng(params.seed).permutation(len(good_paths))
    bank_count = max(MIN_GOOD_IMAGES, len(good_paths) // 2)
    bank_paths = [good_paths[i] for i in sorted(order[:bank_count])]
    head_paths = [good_paths[i] for i in sorted(order[bank_count:])]

    report_progress(0.0, "reading images")
    head_good, unreadable = read_training_images(head_paths)
    skipped.extend(unreadable)
    by_label = {GOOD_LABEL: [pixels for _, pixels in head_good]}
    for label, paths in sorted(defects.items()):
        by_label[label] = read_part_images(paths, skipped)
    too_few = [f"{label} ({len(images)})" for label, images in by_label.items() if len(images) < MIN_IMAGES_PER_LABEL]
    if too_few or len(by_label) < 2:
        raise TrainingDataError(f"every defect label needs at least {MIN_IMAGES_PER_LABEL} usable images and at "
                                f"least one defect folder is needed; too few: {', '.join(too_few) or 'no defects'}")
    labels = list(by_label)
    timings: dict[str, float] = {"read_s": time.perf_counter() - started}

    spec = image_input(params)
    rows: list[FloatArray] = []
    targets: list[int] = []
    groups: list[int] = []
    with tempfile.TemporaryDirectory(prefix="classifier-") as work:
        anomaly = train_anomaly_model(
            bank_paths, {}, name, Path(work) / "anomaly", threads=threads, params=params,
            progress=lambda f, m: report_progress(0.4 * f, f"anomaly model: {m}"))
        skipped.extend(anomaly.skipped)
        anomaly_model = onnx.load(str(Path(work) / "anomaly" / ONNX_FILE))
        onnx.save(with_features_output(anomaly_model), str(Path(work) / "features.onnx"))
        session = create_session(Path(work) / "features.onnx", threads)
        total, done = sum(len(v) for v in by_label.values()), 0
        for index, label in enumerate(labels):
            # Defect examples are few: each is also learnt under the lighting ramps of small good sets.
            # Good parts are not relit here (with them relit too, new parts were rejected more often).
            lighting = params.lighting_ramp if label != GOOD_LABEL else 0.0
            for image in by_label[label]:
                tensor = to_tensor(image, spec).astype(np.float32)
                for variant in augmented_variants(tensor, flips=True, lighting_ramp=lighting):
                    score, features, anomaly_map = session.run(
                        [SCORE_NAME, FEATURES_NAME, MAP_NAME], {INPUT_NAME: np.ascontiguousarray(variant)})
                    rows.append(pooled_features(features[0], anomaly_map[0], float(score[0])))
                    targets.append(index)
                    groups.append(done)
                done += 1
                report_progress(0.4 + 0.4 * done / total, f"features {done}/{total}")
    timings["features_s"] = time.perf_counter() - started - timings["read_s"]
    features_all = np.asarray(rows, np.float32)
    classes = np.asarray(targets, np.int64)
    group = np.asarray(groups, np.int64)
    mean = features_all.mean(axis=0)
    scale = (features_all.std(axis=0) + 1e-6).astype(np.float32)
    standard = ((features_all - mean) / scale).astype(np.float32)

    report_progress(0.85, "cross-validating the threshold")
    originals = np.r_[True, group[1:] != group[:-1]]
    # group: each row's image (0..n-1); same_part: each image's group of look-alike images (one part)
    same_part = similar_image_groups(standard[originals])
    probabilities = out_of_fold_probabilities(standard, classes, same_part[group], len(labels),
                                              params.seed)[originals]
    threshold, metrics = _threshold_and_metrics(probabilities, classes[originals], labels, target)
    metrics["cross_validation_groups"] = len(np.unique(same_part))
    weights, bias = fit_softmax(standard, classes, len(labels))
    timings["fit_s"] = time.perf_counter() - started - timings["read_s"] - timings["features_s"]

    onnx_path = build_dir / ONNX_FILE
    onnx.save(add_classifier_head(anomaly_model, mean, scale, weights, bias), str(onnx_path))
    timings["total_s"] = time.perf_counter() - started
    rows_per_label = np.bincount(classes, minlength=len(labels)).tolist()
    counts = {label: len(images) for label, images in by_label.items()} | {
        f"{label}_variants": rows for label, rows in zip(labels, rows_per_label, strict=True)} | {
        "good_for_anomaly_bank": anomaly.counts["good"], "skipped": len(skipped)}
    undersized = sorted(anomaly.manifest.training.data.get("undersized_good_images", [])
                        + undersized_images(head_good))
    manifest = Manifest(
        name=name, version=1, kind="vision-classifier",
        description="Defect classifier: softmax head on EfficientNet-Lite0 features pooled over the whole "
                    "image and around the most anomalous cells, and good-only anomaly statistics",
        onnx_sha256=sha256_of(onnx_path), input=spec,
        outputs={"probabilities": PROBABILITIES_NAME, "anomaly_map": MAP_NAME},
        labels=labels, ok_labels=[GOOD_LABEL], threshold=threshold, metrics=metrics,
        training=TrainingInfo(data={"images": counts, "skipped_files": len(skipped),
                                    "undersized_good_images": undersized,
                                    "image_size": image_size_summary([image for images in by_label.values()
                                                                      for image in images])},
                              duration_s=round(timings["total_s"], 2), tool="vision.classifier.train_classifier_model",
                              params=params.as_dict()))
    write_manifest(build_dir, manifest)
    report_progress(1.0, "done")
    return TrainingReport(manifest, build_dir, skipped, counts, timings, metrics)


def _threshold_and_metrics(probabilities: npt.NDArray[np.float64], truth: npt.NDArray[np.int64],
                           labels: list[str], target: Target | None = None) -> tuple[float, dict[str, Any]]:
    """NG when 1 - P(good) >= threshold, chosen on cross-validated probabilities for ``target`` (without
    one: see choose_threshold)."""
    defect_score = 1.0 - probabilities[:, 0]
    is_defect = truth != 0
    if target is None:
        recorded_target = Target(false_reject=MAX_FALSE_REJECT, miss=MAX_MISS_RATE)
        threshold = choose_threshold(defect_score, is_defect)
        point = operating_point_at(defect_score[~is_defect], defect_score[is_defect], threshold, recorded_target,
                                   RULE)
    else:
        recorded_target = target
        point = choose_operating_point(defect_score[~is_defect], defect_score[is_defect], target)
        threshold = point.threshold
    predicted = np.where(defect_score >= threshold, np.argmax(np.where(np.arange(len(labels)) == 0, -1, probabilities),
                                                                axis=1), 0)
    metrics = {
        "cross_validated_accuracy": float((predicted == truth).mean()),
        "cross_validated_argmax_accuracy": float((probabilities.argmax(axis=1) == truth).mean()),
        "cross_validated_miss_rate": float((defect_score[is_defect] < threshold).mean()),
        "cross_validated_false_reject_rate": float((defect_score[~is_defect] >= threshold).mean()),
        "folds": FOLDS,
        "operating_point": operating_point_summary(point, recorded_target),
    }
    return threshold, metrics
