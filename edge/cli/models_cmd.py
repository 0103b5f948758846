"""``edge-inspect models``: list, show, promote and roll back model versions; calibrate a threshold on site."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.cli.common import CommandError, add_config_option, audit_change, config_from, registry_for
from edge.cli.progress import progress_bar, shown
from edge.cli.train_cmd import WAV_SUFFIXES, files_in
from edge.config import StationConfig
from edge.site_calibration import MIN_GOOD_IMAGES, JudgedFiles, ScoredFiles
from models.manifest import ManifestError
from models.registry import ModelRegistry, UnknownModelError
from vision.sources import IMAGE_SUFFIXES


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="model registry: list, show, promote, rollback")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every model, its versions and the active one")
    add_config_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON array of the versions")
    listing.set_defaults(handler=run_list)
    show = actions.add_parser("show", help="one version's manifest")
    add_config_option(show)
    show.add_argument("name")
    show.add_argument("version", type=int, nargs="?")
    show.set_defaults(handler=run_show)
    promote = actions.add_parser("promote", help="make a version active (the service switches within seconds)")
    add_config_option(promote)
    promote.add_argument("name")
    promote.add_argument("version", type=int)
    promote.set_defaults(handler=run_promote)
    rollback = actions.add_parser("rollback", help="return to the previously active version")
    add_config_option(rollback)
    rollback.add_argument("name")
    rollback.set_defaults(handler=run_rollback)
    calibrate = actions.add_parser(
        "calibrate", help="set a model's threshold from good parts it has not seen (a new version)",
        description="The active version judges the --good images (or, for a sound model, --normal WAV "
                    "clips) of parts never used to train it; a new version with the same ONNX and the "
                    "threshold that about --false-reject of them exceed is registered and promoted. Prints "
                    "false rejects, and misses on the --defect (--abnormal) files if given, at the old "
                    "and the new threshold.")
    add_config_option(calibrate)
    calibrate.add_argument("name")
    calibrate.add_argument("--good", "--normal", dest="good", type=Path, required=True, metavar="DIR",
                           help=f"good parts the model has not seen (at least {MIN_GOOD_IMAGES} files)")
    calibrate.add_argument("--defect", "--abnormal", dest="defect", type=Path, action="append", default=[],
                           metavar="DIR", help="defect parts, to report misses (repeatable)")
    calibrate.add_argument("--false-reject", type=float, default=0.04, metavar="RATE",
                           help="share of good parts allowed above the threshold (default 0.04)")
    calibrate.add_argument("--dry-run", action="store_true", help="only compare; register nothing")
    calibrate.add_argument("--no-promote", action="store_true", help="register without making it active")
    calibrate.set_defaults(handler=run_calibrate)
    compare = actions.add_parser(
        "compare", help="judge the same labelled files with two versions (default: the active and the newest)",
        description="Both versions judge the --good (--normal) files and each --defect (--abnormal) folder, "
                    "parts that neither was trained on; prints false rejects, misses per defect folder, "
                    "AUROC and the files on which they disagree. Stores nothing.")
    add_config_option(compare)
    compare.add_argument("name")
    compare.add_argument("--good", "--normal", dest="good", type=Path, required=True, metavar="DIR")
    compare.add_argument("--defect", "--abnormal", dest="defect", type=Path, action="append", default=[],
                         metavar="DIR", help="defect parts, one folder per type (repeatable)")
    compare.add_argument("--versions", type=int, nargs=2, metavar=("A", "B"), default=None,
                         help="the two versions (default: the active one and the newest one)")
    compare.add_argument("--show", type=int, default=20, metavar="N", help="list at most N disagreements")
    compare.set_defaults(handler=run_compare)
    evaluate = actions.add_parser(
        "evaluate", help="how a model does on labelled parts it was not trained on, with confidence intervals",
        description="The model (default: its active version) judges the --good (--normal) files and each "
                    "--defect (--abnormal) folder through the station's own path. Prints AUROC with a bootstrap "
                    "interval that resamples whole parts, and false rejects and misses at its threshold with "
                    "95 %% Wilson intervals, overall and per defect type, and the threshold these parts would "
                    "give for the model's own target. Files the model was trained on are left out and listed. "
                    "Stores nothing.")
    add_config_option(evaluate)
    evaluate.add_argument("--model", dest="name", required=True, metavar="NAME")
    evaluate.add_argument("--version", type=int, default=None, help="a version (default: the active one)")
    evaluate.add_argument("--good", "--normal", dest="good", type=Path, required=True, metavar="DIR",
                          help="good parts (normal sound clips) the model was not trained on")
    evaluate.add_argument("--defect", "--abnormal", dest="defect", type=Path, action="append", default=[],
                          metavar="DIR", help="defect parts (abnormal clips), one folder per type (repeatable)")
    evaluate.add_argument("--group-by", choices=["auto", "file", "folder", "number-run"], default="auto",
                          help="which files are one part, resampled together: each file, each sub-folder, "
                               "files with nearby numbers in their names (photos of one part numbered in a "
                               "row); auto: number runs where the names show them, else each file")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    evaluate.set_defaults(handler=run_evaluate)


def run_list(args: argparse.Namespace) -> int:
    registry = registry_for(config_from(args))
    rows: list[dict[str, object]] = []
    for name in registry.names():
        active = registry.active_version(name)
        for entry in registry.versions(name):
            row: dict[str, object] = {"name": name, "version": entry.version, "active": entry.version == active,
                                      "origin": "bundled" if entry.bundled else "trained"}
            try:
                manifest = registry.manifest(name, entry.version)
                row.update(kind=manifest.kind, threshold=manifest.threshold, problem=None)
                summary = f"{manifest.kind:<20} threshold={manifest.threshold:.4g}"
            except ManifestError as exc:
                row.update(kind=None, threshold=None, problem=str(exc))
                summary = f"BROKEN: {exc}"
            rows.append(row)
            if not args.json:
                print(f"{'*' if row['active'] else ' '} {name:<24} v{entry.version:<4} {row['origin']:<8} {summary}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def run_show(args: argparse.Namespace) -> int:
    registry = registry_for(config_from(args))
    try:
        manifest = registry.manifest(args.name, args.version)
    except (UnknownModelError, ManifestError) as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return 0


def run_promote(args: argparse.Namespace) -> int:
    config = config_from(args)
    registry = registry_for(config)
    try:
        before = _active(registry, args.name)
        entry = registry.promote(args.name, args.version)
    except UnknownModelError as exc:
        raise CommandError(str(exc)) from exc
    audit_change(config, "model_promoted", "model", entry.name, {"active_version": before},
                 {"active_version": entry.version})
    print(f"{entry.name} v{entry.version} is now active")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    config = config_from(args)
    registry = registry_for(config)
    try:
        before = _active(registry, args.name)
        entry = registry.rollback(args.name)
    except UnknownModelError as exc:
        raise CommandError(str(exc)) from exc
    audit_change(config, "model_rolled_back", "model", entry.name, {"active_version": before},
                 {"active_version": entry.version})
    print(f"{entry.name} rolled back to v{entry.version}")
    return 0


def _active(registry: ModelRegistry, name: str) -> int | None:
    try:
        return registry.active_version(name)
    except UnknownModelError:
        return None


def _scorer(config: StationConfig, registry: ModelRegistry, name: str,
            version: int | None) -> tuple[Callable[[list[Path]], ScoredFiles], set[str]]:
    """How a version of ``name`` (default: the active one) scores files through the station's own path
    (images) or as ``predict acoustic`` does (WAV clips), and the file suffixes it takes."""
    from edge.inspection import JudgeOptions, quality_limits
    from edge.model_manager import ModelManager
    from edge.site_calibration import score_clips, score_images

    manager = ModelManager(registry, config.models.threads)
    manifest = registry.manifest(name, version)
    if manifest.modality == "acoustic":
        sound = manager.load_acoustic(name, version)
        return (lambda files: score_clips(sound, files)), WAV_SUFFIXES
    vision = manager.load_vision(name, version)
    options = JudgeOptions(model=name, quality=quality_limits(config.quality))
    max_pixels = int(config.api.max_image_megapixels * 1_000_000)
    return (lambda files: score_images(vision, files, options, max_pixels)), IMAGE_SUFFIXES


def _judge_folders(config: StationConfig, registry: ModelRegistry, args: argparse.Namespace,
                   version: int | None = None) -> JudgedFiles:
    """A version of ``args.name`` (default: the active one) judges ``args.good`` and each ``args.defect``
    folder (see _scorer)."""
    manifest = registry.manifest(args.name, version)
    score, suffixes = _scorer(config, registry, args.name, version)
    good = files_in(args.good, suffixes, "good")
    defects = {folder.name: files_in(folder, suffixes, "defect") for folder in args.defect}
    good_scores, defect_scores = _score_with_progress(score, args.good.name, good, defects,
                                                      f"{args.name} v{manifest.version}",
                                                      shown(getattr(args, "json", False)))
    return JudgedFiles(manifest.version, manifest.threshold, good_scores, defect_scores)


def run_calibrate(args: argparse.Namespace) -> int:
    from edge.site_calibration import error_rates, register_calibrated, site_operating_point

    if not 0.0 < args.false_reject < 0.5:
        raise CommandError(f"--false-reject {args.false_reject}: give a share between 0 and 0.5, e.g. 0.04")
    config = config_from(args)
    registry = registry_for(config)
    try:
        source = registry.get(args.name)
        manifest = registry.manifest(args.name)
        judged = _judge_folders(config, registry, args)
    except (UnknownModelError, ManifestError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    good, defect_scores = judged.good, judged.defect_scores()
    parts = "normal clips" if manifest.modality == "acoustic" else "good parts"
    try:
        point = site_operating_point(good.scores, args.false_reject, defect_scores, parts)
        threshold = point.threshold
    except ValueError as exc:
        raise CommandError(f"{exc} ({len(good.skipped)} of the good files skipped)") from exc
    summary = {
        "good_files": len(good.scores), "defect_files": {label: len(s.scores) for label, s in judged.defects.items()},
        "false_reject_target": args.false_reject,
        "at_previous_threshold": error_rates(good.scores, defect_scores, manifest.threshold),
        "at_new_threshold": error_rates(good.scores, defect_scores, threshold),
    }
    report = {"model": args.name, "version": source.version, "threshold": manifest.threshold,
              "new_threshold": threshold, **summary, "operating_point": point.as_dict(),
              "skipped": [{"path": p, "reason": r} for p, r in judged.skipped()]}
    if args.name in config.models.thresholds:
        report["warning"] = (f"the station config overrides this model's threshold "
                             f"({config.models.thresholds[args.name]}): remove models.thresholds.{args.name} "
                             "for the calibrated one to apply")
    if not args.dry_run:
        registered = register_calibrated(registry, source, manifest, threshold, summary, not args.no_promote, point)
        report["registered_version"] = registered.version
        report["active"] = not args.no_promote
        audit_change(config, "model_calibrated", "model", args.name,
                     {"version": source.version, "threshold": manifest.threshold},
                     {"version": registered.version, "threshold": threshold, "active": not args.no_promote},
                     {"false_reject_target": args.false_reject, "good_files": summary["good_files"]})
    print(json.dumps(report, indent=2))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from edge.model_compare import disagreements, version_summary

    config = config_from(args)
    registry = registry_for(config)
    try:
        active = registry.active_version(args.name)
        first, second = args.versions or (active, registry.versions(args.name)[-1].version)
        if first == second:
            raise CommandError(f"v{first} is both the active and the newest version of '{args.name}': "
                               "name two versions with --versions A B")
        judged = [_judge_folders(config, registry, args, version) for version in (first, second)]
    except (UnknownModelError, ManifestError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    differing = disagreements(*judged)
    report = {"model": args.name, "good_folder": str(args.good), "defect_folders": [str(d) for d in args.defect],
              "versions": [version_summary(j, j.version == active) for j in judged],
              "disagreements": len(differing), "disagreeing_files": differing[:max(0, args.show)]}
    print(json.dumps(report, indent=2))
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from edge.model_evaluation import evaluation_report, human_summary, split_trained_on

    config = config_from(args)
    registry = registry_for(config)
    try:
        manifest = registry.manifest(args.name, args.version)
        score, suffixes = _scorer(config, registry, args.name, args.version)
        good_files, trained_on = split_trained_on(files_in(args.good, suffixes, "good"), manifest)
        defect_files = {}
        for folder in args.defect:
            defect_files[folder.name], excluded = split_trained_on(files_in(folder, suffixes, "defect"), manifest)
            trained_on += excluded
        good, defects = _score_with_progress(score, "good", good_files, defect_files, f"{args.name} evaluation",
                                             shown(args.json))
        report = evaluation_report(manifest, good, defects, trained_on, args.group_by)
    except (UnknownModelError, ManifestError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(report, indent=2) if args.json else human_summary(report))
    return 0


def _score_with_progress(score: Any, good_name: str, good: list[Path], defects: dict[str, list[Path]],
                         description: str, enabled: bool) -> tuple[Any, dict[str, Any]]:
    """Score the good files and each defect folder's files, a folder at a time on one progress bar."""
    with progress_bar(description, len(good) + sum(map(len, defects.values())), enabled) as bar:
        good_scores = score(good)
        bar.advance(len(good), f"{good_name}: {len(good)} files")
        defect_scores = {}
        for label, files in defects.items():
            defect_scores[label] = score(files)
            bar.advance(len(files), f"{label}: {len(files)} files")
    return good_scores, defect_scores
