"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.config import ConfigError, StationConfig, load_config
from models.registry import ModelRegistry


class CommandError(Exception):
    """A failure the user can act on: printed as one message, no traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="station YAML (default: $EDGE_INSPECT_CONFIG or config/station.yaml)")


def config_from(args: argparse.Namespace) -> StationConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from exc


def registry_for(config: StationConfig) -> ModelRegistry:
    return ModelRegistry(config.data_dir / "models")
