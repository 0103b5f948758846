"""Train a good-only anomaly model (PatchCore family) into a self-contained ONNX + manifest."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx

from models.evaluation import Target, choose_operating_point, operating_point_summary, photo_groups
from models.manifest import ONNX_FILE, ImageInput, Manifest, TrainingInfo, sha256_of, write_manifest
from vision.anomaly.calibration import (
    PositionStats,
    auroc,
    held_out_scores,
    most_similar,
    nearest_distances,
    normalised_scores,
    position_stats,
)
from vision.anomaly.coreset import greedy_coreset
from vision.anomaly.features import FeatureExtractor, image_input
from vision.anomaly.gaussian import GaussianTerm, fit_with_held_out_maps, mahalanobis_map
from vision.anomaly.graph import MAP_NAME, SCORE_NAME, SearchHead, feature_graph, scoring_graph
from vision.anomaly.images import (
    SkippedFile,
    image_size_summary,
    mask_skips,
    read_part_images,
    read_training_images,
    skipped_summary,
    split_masks,
    undersized_images,
)
from vision.anomaly.params import AnomalyParams

MIN_GOOD_IMAGES = 8
Progress = Callable[[float, str], None]
FloatArray = npt.NDArray[np.float32]


class TrainingDataError(ValueError):
    """The training data cannot produce a model (too few usable images, ...)."""


@dataclass
class TrainingReport:
    manifest: Manifest
    build_dir: Path
    skipped: list[SkippedFile]
    counts: dict[str, int]
    timings_s: dict[str, float]
    metrics: dict[str, Any] = field(default_factory=dict)


def _fit_projection(samples: FloatArray, dims: int) -> tuple[FloatArray, FloatArray]:
    """Mean and the top-``dims`` principal axes [C, dims] of patch features (identity if dims=0)."""
    mean = samples.mean(axis=0).astype(np.float32)
    channels = samples.shape[1]
    if dims <= 0 or dims >= channels:
        return mean, np.eye(channels, dtype=np.float32)
    centred = (samples - mean).astype(np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    top = np.argsort(eigenvalues)[::-1][:dims]
    return mean, np.ascontiguousarray(eigenvectors[:, top], dtype=np.float32)


def _calibration_maps(features: list[FloatArray], indices: list[int], bank: FloatArray,
                      owners: npt.NDArray[np.int64], map_shape: tuple[int, int], exclude_similar: int,
                      groups: list[int] | None = None) -> FloatArray:
    """Distance maps of the given training images, each without its own and its most similar images' patches
    (and those of every image of its group: photos of the same part)."""
    left_out = most_similar(features, indices, min(exclude_similar, len(features) // 20))
    if groups is not None:
        members = np.asarray(groups)
        left_out = [np.union1d(out, np.flatnonzero(members == members[i])) for i, out in zip(indices, left_out,
                                                                                              strict=True)]
    maps = [nearest_distances(features[i], bank, excluded=np.isin(owners, out)).reshape(map_shape)
            for i, out in zip(indices, left_out, strict=True)]
    return np.asarray(maps, np.float32)


def train_anomaly_model(good: list[Path], defects: dict[str, list[Path]], name: str, build_dir: Path, *,
                        threads: int = 2, progress: Progress | None = None,
                        params: AnomalyParams | None = None, target: Target | None = None) -> TrainingReport:
    """Build ``build_dir/model.onnx`` and ``build_dir/manifest.json`` from good images (and defects).

    The threshold is set for ``target`` (default: at most ``params.calibration_false_reject`` of new
    good parts rejected) from held-out scores (models.evaluation); the manifest's
    ``metrics.operating_point`` records the target, the expected rates with their intervals and how
    many parts they came from. Defect images, when given, are scored for it too (misses, and a miss
    target) and reported in the metrics.
    Raises TrainingDataError when fewer than MIN_GOOD_IMAGES good images can be read.
    """
    params = params or AnomalyParams()
    target = target or Target(false_reject=params.calibration_false_reject)
    report_progress: Progress = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    build_dir.mkdir(parents=True, exist_ok=True)

    good, good_masks = split_masks(list(good))
    report_progress(0.0, f"reading {len(good)} good images")
    good_images, skipped = read_training_images(good)
    skipped.extend(mask_skips(good_masks))
    if len(good_images) < MIN_GOOD_IMAGES:
        raise TrainingDataError(
            f"only {len(good_images)} usable good image(s) out of {len(good)}; at least {MIN_GOOD_IMAGES} are "
            f"needed, and 25 or more give a reliable model{skipped_summary(skipped)}")
    defect_images: dict[str, list[npt.NDArray[np.uint8]]] = {}
    for label, paths in defects.items():
        if images := read_part_images(paths, skipped):
            defect_images[label] = images
    timings["read_s"] = time.perf_counter() - started

    spec = image_input(params)
    flips = params.flips and len(good_images) < params.flip_below
    lighting_ramp = params.lighting_ramp if len(good_images) < params.lighting_below else 0.0
    with tempfile.TemporaryDirectory(prefix="anomaly-") as work:
        extractor = FeatureExtractor(feature_graph(params), Path(work), threads)
        count = len(good_images)
        per_image = extractor.extract(
            (pixels for _, pixels in good_images), spec, flips,
            lambda done: report_progress(0.05 + 0.55 * done / count, f"features {done}/{count}"),
            lighting_ramp=lighting_ramp)
        timings["features_s"] = time.perf_counter() - started - timings["read_s"]

        mark = time.perf_counter()
        report_progress(0.6, "selecting the memory bank")
        rng = np.random.default_rng(params.seed)
        all_features = np.concatenate([np.concatenate(variants) for variants in per_image])
        owners_all = np.concatenate([np.full(sum(len(v) for v in variants), i, np.int64)
                                     for i, variants in enumerate(per_image)])
        sample = all_features[rng.choice(len(all_features), min(len(all_features), 100_000), replace=False)]
        mean, projection = _fit_projection(sample, params.projection_dims)
        projected = np.empty((len(all_features), projection.shape[1]), np.float32)
        for start in range(0, len(all_features), 65536):
            projected[start:start + 65536] = (all_features[start:start + 65536] - mean) @ projection
        del all_features
        if params.coreset == "random":
            chosen = rng.choice(len(projected), min(len(projected), params.bank_size), replace=False)
        else:
            chosen = greedy_coreset(projected, params.bank_size, params.coreset_dims, seed=params.seed)
        bank = np.ascontiguousarray(projected[chosen])
        owners = owners_all[chosen]
        del projected
        timings["coreset_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        report_progress(0.8, "calibrating on held-out good images")
        originals = [((variants[0] - mean) @ projection).astype(np.float32) for variants in per_image]
        calibration = sorted(rng.choice(count, min(count, params.calibration_images), replace=False).tolist())
        groups = photo_groups([path for path, _ in good_images])
        maps = _calibration_maps(originals, calibration, bank, owners, params.map_shape,
                                 params.calibration_exclude_similar, groups)
        stats = position_stats(maps, symmetric=flips) if params.position_norm else PositionStats(
            np.zeros(params.map_shape, np.float32), np.ones(params.map_shape, np.float32))
        gaussian, blend = None, None
        if params.position_gaussian > 0:
            report_progress(0.85, "fitting per-position Gaussians")
            gaussian, gaussian_maps = _position_gaussians(per_image, mean, sample, calibration, params, flips, groups)
            blend = (gaussian, gaussian_maps)
        head = SearchHead(mean, projection, bank, stats.mean, stats.scale, gaussian)
        good_scores = (held_out_scores(maps, flips, params.map_sigma, blend) if params.position_norm
                       else normalised_scores(maps, stats, params.map_sigma, blend))
        point = choose_operating_point(good_scores, [], target, normal_tail=True)
        threshold = point.threshold
        metrics: dict[str, Any] = {
            "calibration_images": len(calibration),
            "calibration_good_score_median": float(np.median(good_scores)),
            "calibration_good_score_max": float(good_scores.max()),
            # held-out scores of the good images: an operating point can be set again from them
            "calibration_good_scores": [round(float(v), 5) for v in good_scores],
            "good_only_threshold": threshold,
            "position_gaussian_weight": 0.0 if gaussian is None else gaussian.weight,
        }
        if defect_images:
            defect_scores = _defect_scores(defect_images, extractor, spec, head, params)
            point = choose_operating_point(good_scores, np.concatenate(list(defect_scores.values())), target,
                                           normal_tail=True)
            threshold = point.threshold
            metrics.update(_defect_metrics(good_scores, defect_scores, threshold))
        metrics["operating_point"] = operating_point_summary(point, target)
        metrics["calibration_false_reject_rate"] = float((good_scores >= threshold).mean())
        timings["calibration_s"] = time.perf_counter() - mark

    mark = time.perf_counter()
    report_progress(0.9, "writing the ONNX model")
    onnx_path = build_dir / ONNX_FILE
    onnx.save(scoring_graph(params, head), str(onnx_path))
    timings["export_s"] = time.perf_counter() - mark
    timings["total_s"] = time.perf_counter() - started
    counts = {"good": count, "good_variants": sum(len(v) for v in per_image), "bank": len(bank),
              "skipped": len(skipped)} | {f"defect_{label}": len(v) for label, v in defect_images.items()}
    manifest = Manifest(
        name=name, version=1, kind="vision-anomaly",
        description="Good-only anomaly model (PatchCore family) on EfficientNet-Lite0 features",
        onnx_sha256=sha256_of(onnx_path), input=spec,
        outputs={"score": SCORE_NAME, "anomaly_map": MAP_NAME},
        labels=["good", "anomalous"], ok_labels=["good"], threshold=float(threshold), metrics=metrics,
        training=TrainingInfo(
            data={"good_images": count, "defect_images": {k: len(v) for k, v in defect_images.items()},
                  "skipped_files": len(skipped), "undersized_good_images": undersized_images(good_images),
                  "image_size": image_size_summary([pixels for _, pixels in good_images])},
            duration_s=round(timings["total_s"], 2), tool="vision.anomaly.train_anomaly_model",
            params=params.as_dict()))
    write_manifest(build_dir, manifest)
    report_progress(1.0, "done")
    return TrainingReport(manifest, build_dir, skipped, counts, timings, metrics)


def _position_gaussians(per_image: list[list[FloatArray]], mean: FloatArray, sample: FloatArray,
                        calibration: list[int], params: AnomalyParams,
                        flips: bool, groups: list[int] | None = None) -> tuple[GaussianTerm, FloatArray]:
    """The Gaussian term of the scoring graph (on features centred by ``mean`` and projected onto
    the principal axes of ``sample``), and the calibration images' Mahalanobis maps (each from
    Gaussians fitted without its fold)."""
    projection = _fit_projection(sample, params.position_gaussian_dims)[1]
    projected = [((np.stack(variants) - mean) @ projection).astype(np.float32) for variants in per_image]
    gaussians, maps = fit_with_held_out_maps(projected, calibration, params.map_shape,
                                             params.position_gaussian_shrinkage, params.seed, groups=groups)
    stats = position_stats(maps, symmetric=flips)
    return GaussianTerm(projection, gaussians, stats.mean, stats.scale, params.position_gaussian), maps


def _defect_scores(defect_images: dict[str, list[npt.NDArray[np.uint8]]], extractor: FeatureExtractor,
                   spec: ImageInput, head: SearchHead, params: AnomalyParams) -> dict[str, FloatArray]:
    """The defect images' scores by the finished model (none of them is in its bank or statistics)."""
    stats = PositionStats(head.position_mean, head.position_scale)
    scores: dict[str, FloatArray] = {}
    for label, images in defect_images.items():
        per_image = extractor.extract(images, spec, flips=False)
        centred = [(v[0] - head.mean).astype(np.float32) for v in per_image]
        maps = np.asarray([nearest_distances(c @ head.projection, head.bank).reshape(params.map_shape)
                           for c in centred], np.float32)
        blend = _gaussian_blend(head.gaussian, centred, params)
        scores[label] = normalised_scores(maps, stats, params.map_sigma, blend)
    return scores


def _defect_metrics(good_scores: FloatArray, scores: dict[str, FloatArray], threshold: float) -> dict[str, Any]:
    every = np.concatenate(list(scores.values()))
    return {
        "defect_tuned_threshold": threshold,
        "train_auroc": auroc(good_scores, every),
        "train_miss_rate": float((every < threshold).mean()),
        "train_auroc_per_label": {label: auroc(good_scores, s) for label, s in scores.items()},
        "calibration_defect_scores": {label: [round(float(v), 5) for v in s] for label, s in scores.items()},
    }


def _gaussian_blend(term: GaussianTerm | None, centred: list[FloatArray],
                    params: AnomalyParams) -> tuple[GaussianTerm, FloatArray] | None:
    """The ``gaussian`` argument of normalised_scores for centred patch features, or None without the term."""
    if term is None:
        return None
    maps = np.asarray([mahalanobis_map(c @ term.projection, term.gaussians).reshape(params.map_shape)
                       for c in centred], np.float32)
    return term, maps
