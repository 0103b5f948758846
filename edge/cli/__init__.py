"""The ``edge-inspect`` command: one entry point, sub-commands each in a module of their own."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from edge.cli import (
    audit_cmd,
    collect_cmd,
    config_cmd,
    db_cmd,
    models_cmd,
    predict_cmd,
    run_cmd,
    simulate_cmd,
    status_cmd,
    tokens_cmd,
    train_cmd,
    users_cmd,
    verdict_cmd,
)
from edge.cli.common import CommandError
from edge.logs import LOG_FORMATS, setup_logging

COMMAND_MODULES = [run_cmd, status_cmd, verdict_cmd, train_cmd, predict_cmd, models_cmd, config_cmd, db_cmd,
                   audit_cmd, simulate_cmd, users_cmd, tokens_cmd, collect_cmd]


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip recorded it)."""
    try:
        return metadata.version("edge-inspect")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-inspect", description="Edge inspection appliance: camera and microphone in, verdicts out.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None,
                        help="text or json (one object per line); default: logging.format of the config for "
                             "`run`, text otherwise")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format or "text", args.verbose)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"edge-inspect: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


