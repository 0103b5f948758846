"""``edge-inspect audit``: verify the hash chains, show the chain head, list the audit trail."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
from dataclasses import asdict

from edge.cli.common import CommandError, add_config_option, config_from
from edge.store.archiving import verify_archives
from edge.store.chain import head
from edge.store.records import AuditEntry, from_row
from edge.store.schema import connect
from edge.store.verify import verify_database


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("audit", help="verify the tamper-evident record; read the audit trail",
                                 description="Every verdict and every state change is a record chained by "
                                             "SHA-256 to the one before it.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="walk both chains; exit 1 naming the first altered, inserted, deleted or reordered record",
        description="Recompute every record's hash in id order. Exit 0: both chains intact. Exit 1: the first "
                    "bad record is named with what is wrong. Exit 2: the database cannot be read.")
    add_config_option(verify)
    verify.add_argument("--json", action="store_true", help="print one JSON object")
    verify.add_argument("--archives", action="store_true",
                        help="also check the archive files verdict rows were moved to (<data>/archive): each "
                             "file's SHA-256, every record's hash and the links from file to file and to the live "
                             "chain")
    verify.set_defaults(handler=run_verify)
    show_head = actions.add_parser("head", help="the last record id and hash of each chain (to anchor upstream)")
    add_config_option(show_head)
    show_head.set_defaults(handler=run_head)
    listing = actions.add_parser("list", help="audit records after a cursor, oldest first, as JSON lines")
    add_config_option(listing)
    listing.add_argument("--since", type=int, default=0, help="records with a larger id")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=run_list)


def _open(args: argparse.Namespace) -> sqlite3.Connection:
    path = config_from(args).database_path
    if not path.is_file():
        raise CommandError(f"no database at {path} yet (the service creates it on first start)")
    try:
        conn = connect(path, readonly=True)
        conn.execute("SELECT 1 FROM chain_heads LIMIT 1")
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {path}: {exc} (run `edge-inspect db migrate` for an older database)") \
            from exc
    return conn


def run_verify(args: argparse.Namespace) -> int:
    conn = _open(args)
    conn.close()
    config = config_from(args)
    try:
        reports = verify_database(config.database_path)
        archives = None
        if args.archives:
            with contextlib.closing(connect(config.database_path, readonly=True)) as conn:
                archives = verify_archives(conn, config.archive_dir)
    except sqlite3.Error as exc:
        raise CommandError(f"the database cannot be read to the end: {exc}") from exc
    intact = all(r.intact for r in reports) and (archives is None or archives.intact)
    if args.json:
        document: dict[str, object] = {"intact": intact, "chains": [
            {"chain": r.chain, "records_verified": r.records, "head": {"id": r.head_id, "hash": r.head_hash},
             "archived_through": r.anchor_id, "finding": None if r.finding is None else asdict(r.finding)}
            for r in reports]}
        if archives is not None:
            document["archives"] = {"files": archives.files, "records_verified": archives.records,
                                    "intact": archives.intact,
                                    "finding": None if archives.finding is None else asdict(archives.finding)}
        print(json.dumps(document))
    else:
        for r in reports:
            state = "intact" if r.intact else "BROKEN"
            archived = f" (records up to {r.anchor_id} are archived)" if r.anchor_id else ""
            print(f"{r.chain}: {state}, {r.records} records verified, head {r.head_id} {r.head_hash[:16]}…{archived}")
            if r.finding is not None:
                print(f"  first bad record: {r.finding.record_id} ({r.finding.problem}): {r.finding.message}")
        if archives is not None:
            state = "intact" if archives.intact else "BROKEN"
            print(f"archives: {state}, {archives.files} files, {archives.records} records verified")
            if archives.finding is not None:
                print(f"  {archives.finding.problem}: {archives.finding.message}")
    return 0 if intact else 1


def run_head(args: argparse.Namespace) -> int:
    conn = _open(args)
    heads = {chain: dict(zip(("id", "hash"), head(conn, chain), strict=True)) for chain in ("verdicts", "audit")}
    print(json.dumps(heads))
    return 0


def run_list(args: argparse.Namespace) -> int:
    conn = _open(args)
    rows = conn.execute("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (args.since, args.limit))
    for row in rows:
        print(json.dumps(asdict(from_row(AuditEntry, row))))
    sys.stdout.flush()
    return 0
