"""``edge-inspect models``: list, show, promote and roll back model versions."""

from __future__ import annotations

import argparse
import json

from edge.cli.common import CommandError, add_config_option, config_from, registry_for
from models.manifest import ManifestError
from models.registry import UnknownModelError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="model registry: list, show, promote, rollback")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="every model, its versions and the active one")
    add_config_option(listing)
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


def run_list(args: argparse.Namespace) -> int:
    registry = registry_for(config_from(args))
    for name in registry.names():
        active = registry.active_version(name)
        for entry in registry.versions(name):
            try:
                manifest = registry.manifest(name, entry.version)
                summary = f"{manifest.kind:<20} threshold={manifest.threshold:.4g}"
            except ManifestError as exc:
                summary = f"BROKEN: {exc}"
            marker = "*" if entry.version == active else " "
            origin = "bundled" if entry.bundled else "trained"
            print(f"{marker} {name:<24} v{entry.version:<4} {origin:<8} {summary}")
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
    registry = registry_for(config_from(args))
    try:
        entry = registry.promote(args.name, args.version)
    except UnknownModelError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{entry.name} v{entry.version} is now active")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    registry = registry_for(config_from(args))
    try:
        entry = registry.rollback(args.name)
    except UnknownModelError as exc:
        raise CommandError(str(exc)) from exc
    print(f"{entry.name} rolled back to v{entry.version}")
    return 0
