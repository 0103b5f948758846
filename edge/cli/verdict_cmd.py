"""``edge-inspect verdict FILE...``: judge image files offline through the service's own path."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from edge.config import StationConfig
from edge.inspection import JudgeOptions, evaluate, quality_limits
from edge.model_manager import ModelManager
from models.manifest import ManifestError
from models.registry import UnknownModelError
from vision.images import ImageError, read_image_file


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("verdict", help="judge image files offline and print JSON lines",
                                 description="Judge files with the station's model, exactly as the service "
                                             "would; prints one JSON object per file. Stores nothing.")
    add_config_option(parser)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--model", default=None, help="model name (default: models.vision from the config)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    return judge_image_files(config, args.model or config.models.vision, args.files, unreadable_verdict=False)


def judge_image_files(config: StationConfig, model: str, files: list[Path], unreadable_verdict: bool) -> int:
    """Print one JSON line per image, judged as the service would; 1 if any file was unreadable.

    An unreadable file is reported with its error, and with ``unreadable_verdict`` also as an INVALID
    verdict (the ``predict`` contract: every input gets a decision)."""
    manager = ModelManager(registry_for(config), config.models.threads, config.models.thresholds)
    try:
        inspector = manager.vision(model)
    except (UnknownModelError, ManifestError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    options = JudgeOptions(model=model, quality=quality_limits(config.quality))
    failures = 0
    max_pixels = int(config.api.max_image_megapixels * 1_000_000)
    for path in files:
        try:
            image = read_image_file(path, max_pixels)
        except ImageError as exc:
            failures += 1
            unreadable = {"decision": "INVALID", "label": "unreadable", "score": None} if unreadable_verdict else {}
            print(json.dumps({"path": str(path), **unreadable, "error": {"code": exc.reason, "message": str(exc)}}))
            continue
        result, details = evaluate(inspector, image.pixels, options)
        model_ms = result.timings_ms.get("model")  # absent when the quality gate stopped the frame
        print(json.dumps({
            "path": str(path), "decision": result.decision, "label": result.label,
            "score": None if result.score is None else round(result.score, 6), "reason": result.reason,
            "threshold": result.threshold, "model": {"name": result.model_name, "version": result.model_version},
            "inference_ms": None if model_ms is None else round(model_ms, 3), **details,
        }))
    sys.stdout.flush()
    return 1 if failures else 0
