"""``edge-inspect db``: inspect, migrate, back up and export the verdict database."""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from pathlib import Path

import sqlite_utils

from edge.cli.common import CommandError, add_config_option, config_from
from edge.store.schema import LATEST_VERSION, connect, current_version, migrate
from edge.store.store import VERDICT_VIEW


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("db", help="verdict database helpers")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = actions.add_parser("info", help="path, schema version and row counts")
    add_config_option(info)
    info.set_defaults(handler=run_info)
    mig = actions.add_parser("migrate", help="apply pending schema migrations (the service also does at start)")
    add_config_option(mig)
    mig.set_defaults(handler=run_migrate)
    backup = actions.add_parser("backup", help="consistent copy of the live database")
    add_config_option(backup)
    backup.add_argument("target", type=Path)
    backup.set_defaults(handler=run_backup)
    export = actions.add_parser("export", help="verdicts after a cursor as JSON lines or CSV")
    add_config_option(export)
    export.add_argument("--since", type=int, default=0, help="export verdicts with a larger id")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.set_defaults(handler=run_export)


def _open(args: argparse.Namespace, must_exist: bool = True) -> tuple[Path, sqlite3.Connection]:
    config = config_from(args)
    path = config.database_path
    if must_exist and not path.is_file():
        raise CommandError(f"no database at {path} yet (the service creates it on first start)")
    try:
        return path, connect(path)
    except sqlite3.Error as exc:
        raise CommandError(f"cannot open {path}: {exc}") from exc


def run_info(args: argparse.Namespace) -> int:
    path, conn = _open(args)
    db = sqlite_utils.Database(conn)
    counts = {t: db[t].count for t in db.table_names() if t != "schema_version"}
    print(json.dumps({"path": str(path), "schema_version": current_version(db), "latest_version": LATEST_VERSION,
                      "size_bytes": path.stat().st_size, "rows": counts}, indent=2))
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    path, conn = _open(args, must_exist=False)
    applied = migrate(sqlite_utils.Database(conn), path)
    print(f"{path}: applied migrations {applied}" if applied else f"{path}: schema is up to date")
    return 0


def run_backup(args: argparse.Namespace) -> int:
    _, conn = _open(args)
    target = sqlite3.connect(args.target)
    with target:
        conn.backup(target)
    target.close()
    print(f"backed up to {args.target}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    _, conn = _open(args)
    rows = conn.execute(VERDICT_VIEW + " WHERE v.id > ? ORDER BY v.id", (args.since,))
    columns = [c[0] for c in rows.description]
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        for row in rows:
            print(json.dumps(dict(zip(columns, tuple(row), strict=True))))
    return 0
