"""``edge-inspect db``: inspect, migrate, back up, restore, archive and export the verdict database."""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path

import sqlite_utils

from edge.cli.common import CommandError, add_config_option, cli_actor, config_from
from edge.retention.verdicts import archive_due
from edge.store import StoreError
from edge.store.archiving import ArchiveError
from edge.store.backup import BackupError, backup_database, integrity_problems, restore_database
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
    backup = actions.add_parser(
        "backup", help="consistent, checked copy of the live database (the service may keep running)",
        description="Copies the database with SQLite's online backup API from one read snapshot (the service "
                    "keeps writing meanwhile), checks the copy with PRAGMA integrity_check, then renames it into "
                    "place: PATH is complete and sound, or absent.")
    add_config_option(backup)
    backup.add_argument("target", type=Path, metavar="PATH")
    backup.add_argument("--json", action="store_true", help="print one JSON object")
    backup.set_defaults(handler=run_backup)
    restore = actions.add_parser(
        "restore", help="replace the database with a backup (the service must be stopped)",
        description="Refuses while a station runs on the data folder. Checks the backup's integrity and hash "
                    "chains first; keeps the replaced database beside it as <name>.replaced-<time>; puts the "
                    "backup in place with one atomic rename and audits the restore.")
    add_config_option(restore)
    restore.add_argument("source", type=Path, metavar="PATH")
    restore.add_argument("--json", action="store_true", help="print one JSON object")
    restore.set_defaults(handler=run_restore)
    archive = actions.add_parser(
        "archive", help="move old verdict rows to compressed archive files now (the service does it daily)",
        description="Verdicts older than storage.archive_after_days (or --older-than-days) are written to gzip "
                    "NDJSON files under <data>/archive with a manifest, then removed from the database; with the "
                    "QMS link configured, only those delivered upstream. `audit verify --archives` checks them.")
    add_config_option(archive)
    archive.add_argument("--older-than-days", type=float, default=None, metavar="DAYS")
    archive.add_argument("--json", action="store_true", help="print one JSON object")
    archive.set_defaults(handler=run_archive)
    check = actions.add_parser("check", help="PRAGMA integrity_check of the database (exit 1 when damaged)")
    add_config_option(check)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=run_check)
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
    path, conn = _open(args)
    conn.close()
    try:
        result = backup_database(path, args.target)
    except BackupError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({"database": str(path), "backup": str(result.path), "size_bytes": result.size_bytes,
                          "seconds": round(result.seconds, 3), "integrity": result.integrity}))
    else:
        print(f"backed up {path} to {result.path} ({result.size_bytes} bytes, {result.seconds:.2f} s, "
              f"integrity {result.integrity})")
    return 0


def run_restore(args: argparse.Namespace) -> int:
    database = config_from(args).database_path
    try:
        result = restore_database(args.source, database, cli_actor())
    except BackupError as exc:
        raise CommandError(str(exc)) from exc
    kept = None if result.replaced_kept_as is None else str(result.replaced_kept_as)
    if args.json:
        print(json.dumps({"database": str(database), "restored_from": str(result.restored_from),
                          "replaced_kept_as": kept, "chains": [
                              {"chain": r.chain, "records_verified": r.records, "head_id": r.head_id,
                               "intact": r.intact} for r in result.chains]}))
    else:
        print(f"restored {database} from {result.restored_from}; chains intact "
              f"({', '.join(f'{r.chain} {r.records} records' for r in result.chains)})")
        if kept is not None:
            print(f"the replaced database is kept as {kept}")
    return 0


def run_archive(args: argparse.Namespace) -> int:
    config = config_from(args)
    if not config.database_path.is_file():
        raise CommandError(f"no database at {config.database_path} yet (the service creates it on first start)")
    days = config.storage.archive_after_days if args.older_than_days is None else args.older_than_days
    if days <= 0:
        raise CommandError("archiving is off (storage.archive_after_days: 0): give --older-than-days DAYS")
    try:
        run = archive_due(config, days)
    except (ArchiveError, StoreError, sqlite3.Error, OSError) as exc:
        raise CommandError(f"archiving failed: {exc}") from exc
    if args.json:
        print(json.dumps({"archived": run.records, "removed": run.removed, "files": [asdict(m) for m in run.files],
                          "longest_removal_ms": round(run.longest_removal_ms, 2)}))
    else:
        print(f"archived {run.records} verdicts in {len(run.files)} file(s) under {config.archive_dir}; removed "
              f"{run.removed} rows (longest removal transaction {run.longest_removal_ms:.1f} ms)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    database = config_from(args).database_path
    if not database.is_file():
        raise CommandError(f"no database at {database} yet (the service creates it on first start)")
    problems = integrity_problems(database)
    if args.json:
        print(json.dumps({"database": str(database), "ok": not problems, "problems": problems}))
    elif problems:
        print(f"{database} is damaged: " + "; ".join(problems))
        print("restore a backup: edge-inspect db restore PATH (scheduled backups are in the backup folder)")
    else:
        print(f"{database}: integrity ok")
    return 1 if problems else 0


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
