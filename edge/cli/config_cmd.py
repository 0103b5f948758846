"""``edge-inspect config check``: validate a station file and what it points at."""

from __future__ import annotations

import argparse

from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from models.manifest import ManifestError, read_manifest, verify_onnx
from models.registry import UnknownModelError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="station configuration helpers")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate the station file, its models and folders")
    add_config_option(check)
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    config = config_from(args)
    problems: list[str] = []
    registry = registry_for(config)
    wanted = {config.models.vision} | {s.model for s in config.sources if s.model}
    for name in sorted(wanted):
        try:
            entry = registry.get(name)
            verify_onnx(entry.folder, read_manifest(entry.folder))
            print(f"model {name}: version {entry.version} OK ({entry.folder})")
        except (UnknownModelError, ManifestError) as exc:
            problems.append(f"model {name}: {exc}")
    for source in config.sources:
        folder = config.resolve(source.folder)
        if not folder.is_dir():
            problems.append(f"sources[{source.name}].folder: {folder} does not exist")
    if problems:
        raise CommandError("config check failed:\n  - " + "\n  - ".join(problems))
    print(f"config OK: station {config.station.id}, data folder {config.data_dir}, "
          f"{len(config.sources)} source(s), API on {config.api.host}:{config.api.port}")
    return 0
