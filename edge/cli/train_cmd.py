"""``edge-inspect train vision|acoustic``: train, register and promote a new model version."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.cli.common import CommandError, add_config_option, audit_change, config_from, registry_for
from edge.cli.progress import fraction_progress, shown
from edge.training import Kind, TrainingError, starved, train
from models.evaluation import Target
from models.manifest import ImageInput, Manifest, model_name_problem
from vision.anomaly.images import split_masks
from vision.inspector import minimum_image_size
from vision.sources import IMAGE_SUFFIXES

WAV_SUFFIXES = {".wav"}


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train, register and promote a model version")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    vision = kinds.add_parser(
        "vision", help="from good parts only (anomaly model), or with labelled defect folders (classifier)",
        description="Trains in a separate low-priority process; the running service switches to the new "
                    "version by itself. With only --good: a good-only anomaly model. Each --defect folder adds "
                    "defect images labelled with the folder's name, and the model becomes a defect classifier "
                    "(at least 11 good images and 3 per label).")
    add_config_option(vision)
    vision.add_argument("--good", type=Path, required=True, metavar="DIR", help="images of good parts")
    vision.add_argument("--defect", type=Path, action="append", default=[], metavar="DIR",
                        help="images of one defect type (repeatable)")
    vision.add_argument("--name", required=True, help="model name, e.g. tile-anomaly")
    vision.add_argument("--no-promote", action="store_true", help="register without making it active")
    vision.add_argument("--trainer", choices=["default", "yolo"], default="default",
                        help="default: the anomaly model or light classifier head; yolo: an ultralytics YOLO "
                             "classifier trained from scratch (needs --defect folders and the optional yolo extra, "
                             "AGPL-3.0; at least 5 images per class)")
    vision.add_argument("--epochs", type=int, default=None, metavar="N", help="yolo: training epochs (default 30)")
    vision.add_argument("--imgsz", type=int, default=None, metavar="N",
                        help="yolo: square input size in pixels, a multiple of 32 (default 128)")
    _add_priority_option(vision)
    _add_target_options(vision, "good parts", "defects")
    vision.set_defaults(handler=run, train_kind="vision")
    acoustic = kinds.add_parser(
        "acoustic", help="from normal recordings only (anomaly model), or with labelled fault folders",
        description="Trains in a separate low-priority process. Each --abnormal folder's name is its fault label.")
    add_config_option(acoustic)
    acoustic.add_argument("--normal", type=Path, required=True, metavar="DIR", help="WAV clips of normal sound")
    acoustic.add_argument("--abnormal", type=Path, action="append", default=[], metavar="DIR",
                          help="WAV clips of one fault type (repeatable)")
    acoustic.add_argument("--name", required=True)
    acoustic.add_argument("--no-promote", action="store_true")
    acoustic.add_argument("--level", choices=["use", "ignore"], default="use",
                          help="use: the microphone has a fixed gain and place, so a change in loudness is "
                               "evidence (default); ignore: a portable or re-gained microphone, judge the "
                               "spectrum's shape only (normal-only models)")
    _add_priority_option(acoustic)
    _add_target_options(acoustic, "normal clips", "abnormal clips")
    acoustic.set_defaults(handler=run, train_kind="acoustic", trainer="default")


def _add_priority_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the registered version as one JSON object (no progress bar)")
    parser.add_argument("--priority", choices=["idle", "low"], default=None,
                        help="idle: training runs only on CPU time nothing else on the station wants (verdict "
                             "latency does not move, but other busy processes slow training down); low: niced "
                             "only, training keeps a small share and inspection slows a little "
                             "(default: training.priority of the station file, idle)")


def _add_target_options(parser: argparse.ArgumentParser, good: str, bad: str) -> None:
    parser.add_argument("--false-reject", type=float, default=None, metavar="RATE",
                        help=f"operating point: at most this share of {good} rejected (default 0.05; the "
                             "threshold comes from held-out training scores, and the manifest records the "
                             "expected rates with their intervals)")
    parser.add_argument("--miss", type=float, default=None, metavar="RATE",
                        help=f"operating point with labelled {bad}: at most this share of them passed, within "
                             "the false-reject bound (the output warns when both cannot be had)")


def _target(args: argparse.Namespace) -> Target | None:
    if args.false_reject is None and args.miss is None:
        return None
    try:
        return Target(false_reject=args.false_reject if args.false_reject is not None else 0.05, miss=args.miss)
    except ValueError as exc:
        raise CommandError(str(exc).replace("false-reject target", "--false-reject").replace(
            "miss target", "--miss")) from exc


def files_in(folder: Path, suffixes: set[str], role: str) -> list[Path]:
    """The training files of a folder (and its sub-folders); defect masks beside images are left out."""
    if not folder.is_dir():
        raise CommandError(f"{role} folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    if suffixes is IMAGE_SUFFIXES:
        files = split_masks(files)[0]
    if not files:
        raise CommandError(f"{role} folder {folder} holds no {', '.join(sorted(suffixes))} files")
    return files


def _trainer_options(args: argparse.Namespace) -> dict[str, int]:
    """The yolo trainer's options from the command line; refused for the default trainer."""
    given = {key: value for key in ("epochs", "imgsz") if (value := getattr(args, key, None)) is not None}
    if args.trainer != "yolo":
        if given:
            raise CommandError(f"--{' --'.join(given)} only apply to --trainer yolo")
        return {}
    if not args.defect:
        raise CommandError("--trainer yolo trains a defect classifier: give at least one --defect folder")
    if given.get("epochs", 1) < 1:
        raise CommandError("--epochs must be at least 1")
    from vision.yolo import imgsz_problem

    if "imgsz" in given and (problem := imgsz_problem(given["imgsz"])):
        raise CommandError(f"--{problem}")
    return given  # edge.training.train refuses the yolo trainer when ultralytics is not installed


def operating_point_line(point: dict[str, object]) -> str:
    """One line on what the threshold is expected to do on new parts (the manifest's operating point)."""
    def percent(value: object) -> str:
        return f"{float(value):.1%}" if isinstance(value, int | float) else "?"

    def interval(values: object) -> str:
        return f"{percent(values[0])}-{percent(values[1])}" if isinstance(values, list) and len(values) == 2 else "?"

    target = point.get("target")
    text = target.get("text") if isinstance(target, dict) else target
    line = (f"operating point ({text}): expected false rejects {percent(point.get('expected_false_reject'))} "
            f"(95 % {interval(point.get('false_reject_interval'))}) from {point.get('good_parts')} held-out parts")
    if point.get("expected_miss") is not None:
        line += (f", misses {percent(point.get('expected_miss'))} (95 % {interval(point.get('miss_interval'))}) "
                 f"from {point.get('defect_parts')}")
    return line


def _scaled_up_note(manifest: Manifest) -> str | None:
    """A note when the training images are far smaller than the model input (scaled up more than 2x)."""
    size, spec = manifest.training.data.get("image_size"), manifest.input
    if not size or not isinstance(spec, ImageInput):
        return None
    width, height = size["median_width"], size["median_height"]
    if width * 2 > spec.width or height * 2 > spec.height:
        return None
    least = minimum_image_size(manifest)
    return (f"note: the images are {width}x{height} px (median), the model input {spec.width}x{spec.height}: "
            "they are scaled up, and the model sees no finer detail than they hold. Parts must be judged from "
            f"images of about this size (smaller than {least.width}x{least.height} px are refused); "
            "higher-resolution crops of the parts let it see smaller defects")


def run(args: argparse.Namespace) -> int:
    kind: Kind = args.train_kind
    if problem := model_name_problem(args.name):
        raise CommandError(problem)
    config = config_from(args)
    options = _trainer_options(args)
    target = _target(args)
    if target is not None and args.trainer == "yolo":
        raise CommandError("--false-reject and --miss apply to the default trainer")
    suffixes = IMAGE_SUFFIXES if kind == "vision" else WAV_SUFFIXES
    good_key, good_dir, labelled_dirs = (
        ("good", args.good, args.defect) if kind == "vision" else ("normal", args.normal, args.abnormal))
    examples = {good_key: files_in(good_dir, suffixes, good_key)}
    for folder in labelled_dirs:
        label = folder.resolve().name
        if label in examples:
            raise CommandError(f"two folders are labelled '{label}'")
        examples[label] = files_in(folder, suffixes, f"'{label}'")

    priority = args.priority or config.training.priority
    try:
        with fraction_progress(f"training {args.name}", shown(args.json), lines=not args.json) as progress:
            outcome = train(kind, examples, args.name, registry_for(config), progress=progress,
                            promote=not args.no_promote, trainer=args.trainer, options=options,
                            priority=priority, niceness=config.training.niceness, target=target,
                            level=getattr(args, "level", "use"))
    except TrainingError as exc:
        raise CommandError(f"training failed: {exc}") from exc
    except KeyboardInterrupt:
        raise CommandError("training cancelled; nothing was registered", exit_code=130) from None
    for path, reason in outcome.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if undersized := outcome.manifest.training.data.get("undersized_good_images"):
        print(f"warning: {len(undersized)} good image(s) under half the others' size, scaled up, train as blurred "
              f"parts and loosen the threshold (remove them if they are not parts): {', '.join(undersized)}",
              file=sys.stderr)
    if note := _scaled_up_note(outcome.manifest):
        print(note, file=sys.stderr)
    if starved(outcome.cpu_cores, outcome.duration_s) and priority == "idle":
        print(f"note: training got {outcome.cpu_cores:.0%} of one CPU core on average: other work on the station "
              "held it back. --priority low (or training.priority: low in the station file) gives it a share, "
              "at a small cost in verdict latency while it runs", file=sys.stderr)
    state = "registered and promoted" if not args.no_promote else "registered (not active)"
    manifest = outcome.manifest
    audit_change(config, "model_trained", "model", manifest.name, None,
                 {"version": manifest.version, "kind": manifest.kind, "threshold": manifest.threshold,
                  "active": not args.no_promote, "onnx_sha256": manifest.onnx_sha256},
                 {"examples": {label: len(files) for label, files in examples.items()},
                  "skipped": len(outcome.skipped)})
    point = manifest.metrics.get("operating_point")
    if args.json:
        print(json.dumps({"name": manifest.name, "version": manifest.version, "kind": manifest.kind,
                          "active": not args.no_promote, "threshold": manifest.threshold,
                          "duration_s": round(outcome.duration_s, 2), "operating_point": point,
                          "skipped": [{"file": str(path), "reason": reason} for path, reason in outcome.skipped]},
                         indent=2))
    else:
        print(f"{manifest.name} v{manifest.version} {state} in {outcome.duration_s:.1f} s: {manifest.kind}, "
              f"threshold {manifest.threshold:.4g}")
    if point:
        if not args.json:
            print(operating_point_line(point))
        if point.get("warning"):
            print(f"warning: {point['warning']}", file=sys.stderr)
    good_flag = "--good" if kind == "vision" else "--normal"
    print(f"next: check it on parts it has not seen: edge-inspect models compare {manifest.name} {good_flag} DIR; "
          f"confirm its threshold: edge-inspect models calibrate {manifest.name} {good_flag} DIR", file=sys.stderr)
    return 0
