"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from edge.access import AccessRecordError
from edge.access.database import in_transaction, open_database
from edge.config import ConfigError, StationConfig, load_config
from edge.store.chain import append_audit
from models.registry import ModelRegistry

T = TypeVar("T")


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


def cli_actor() -> str:
    """How the audit trail records a command: ``cli:<OS user name>``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    return f"cli:{name}"


@contextlib.contextmanager
def station_database(config: StationConfig) -> Iterator[sqlite3.Connection]:
    """The station's database (created and migrated if absent); refusals become CommandError (exit 2)."""
    path = config.database_path
    try:
        with open_database(path) as conn:
            yield conn
    except AccessRecordError as exc:
        raise CommandError(str(exc)) from exc
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        raise CommandError(f"cannot use the station database {path}: {exc}") from exc


def change(conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], T]) -> T:
    """One audited change in its own ``BEGIN IMMEDIATE`` transaction."""
    return in_transaction(conn, operation)


def audit_change(config: StationConfig, action: str, entity: str, entity_id: str | int | None,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                 details: dict[str, Any] | None = None) -> None:
    """Record a change a command made outside the database (a model promoted, ...) in the station's audit
    trail, under ``cli:<OS user>``; the running service, if any, keeps writing to the same chain."""
    actor = cli_actor()
    with station_database(config) as conn:
        change(conn, lambda c: append_audit(c, actor, action, entity, entity_id, before, after, details))
