"""``edge-inspect predict vision|acoustic --model NAME --json FILE...``: one JSON line per input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from edge.cli.verdict_cmd import judge_image_files
from models.manifest import ManifestError
from models.registry import UnknownModelError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("predict", help="judge files with a named model (JSON lines)")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, what in (("vision", "image files"), ("acoustic", "WAV files")):
        sub = kinds.add_parser(kind, help=f"judge {what}")
        add_config_option(sub)
        sub.add_argument("--model", required=True, help="model name (its active version)")
        sub.add_argument("--json", action="store_true", help="one JSON object per line (the only output format)")
        sub.add_argument("files", nargs="+", type=Path, metavar="FILE")
        sub.set_defaults(handler=run_vision if kind == "vision" else run_acoustic)


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=False)


def run_vision(args: argparse.Namespace) -> int:
    return judge_image_files(config_from(args), args.model, args.files, unreadable_verdict=True)


def run_acoustic(args: argparse.Namespace) -> int:
    from acoustic.inspector import AcousticInspector
    from acoustic.training import read_wav
    from models.runtime import load_model

    config = config_from(args)
    registry = registry_for(config)
    try:
        entry = registry.get(args.model)
        model = load_model(entry.folder, threads=1, warm_up=False)
        inspector = AcousticInspector(model)
    except (UnknownModelError, ManifestError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    failures = 0
    for path in args.files:
        try:
            waveform, rate = read_wav(path)
        except (OSError, ValueError, RuntimeError) as exc:
            failures += 1
            _emit({"path": str(path), "decision": "INVALID", "label": "unreadable", "score": None,
                   "reason": f"cannot read {path}: {exc}"})
            continue
        result = inspector.judge(waveform, rate)
        _emit({"path": str(path), **result.to_dict(), "model": {"name": model.name, "version": model.version}})
    sys.stdout.flush()
    return 1 if failures else 0
