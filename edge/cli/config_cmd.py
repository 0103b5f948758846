"""``edge-inspect config check``: validate a station file and what it points at."""

from __future__ import annotations

import argparse
import json
import sqlite3

from edge.access import AccessConfigError, check_startup, is_loopback
from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from edge.config import StationConfig
from edge.server import TlsError, tls_files
from edge.store.schema import connect
from models.manifest import ManifestError, read_manifest, verify_onnx
from models.registry import UnknownModelError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="station configuration helpers")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate the station file, its models and folders")
    add_config_option(check)
    check.add_argument("--json", action="store_true",
                       help='one JSON object: {"ok", "station", "models", "notes", "problems"} (exit 2 when not ok)')
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    config = config_from(args)
    problems: list[str] = []
    notes: list[str] = []
    models: dict[str, int] = {}
    registry = registry_for(config)
    wanted = {config.models.vision} | {s.model for s in config.sources if s.model}
    for name in sorted(wanted):
        try:
            entry = registry.get(name)
            verify_onnx(entry.folder, read_manifest(entry.folder))
            models[name] = entry.version
            notes.append(f"model {name}: version {entry.version} OK ({entry.folder})")
        except (UnknownModelError, ManifestError) as exc:
            problems.append(f"model {name}: {exc}")
    for source in config.sources:
        folder = config.resolve(source.folder)
        if not folder.is_dir():
            problems.append(f"sources[{source.name}].folder: {folder} does not exist")
    try:
        tls_files(config)
    except TlsError as exc:
        problems.append(f"api: {exc}")
    problems += access_problems(config, notes)
    if args.json:
        print(json.dumps({"ok": not problems, "station": config.station.id, "data_dir": str(config.data_dir),
                          "api": f"{config.api.host}:{config.api.port}", "models": models, "notes": notes,
                          "problems": problems}, indent=2))
        return 2 if problems else 0
    for note in notes:
        print(note)
    if problems:
        raise CommandError("config check failed:\n  - " + "\n  - ".join(problems))
    print(f"config OK: station {config.station.id}, data folder {config.data_dir}, "
          f"{len(config.sources)} source(s), API on {config.api.host}:{config.api.port}")
    return 0


def access_problems(config: StationConfig, notes: list[str]) -> list[str]:
    """Would access control let the station start? (Beyond loopback it needs an admin.) Reads only;
    what it has to say besides problems goes to ``notes``."""
    path = config.database_path
    if not path.is_file():
        if is_loopback(config.api.host):
            return []
        return [f"access: the API listens on {config.api.host} but no admin exists yet (no database at {path}): "
                f"create one with `edge-inspect users add NAME --role admin --config {config.source_path}`"]
    try:
        conn = connect(path, readonly=True)
        try:
            notes += check_startup(config, conn, config.api.host, config.source_path)
        finally:
            conn.close()
    except AccessConfigError as exc:
        return [f"access: {exc}"]
    except sqlite3.Error as exc:
        return [f"database {path}: {exc}"]
    return []
