"""Database schema as numbered migrations, applied in order and recorded in ``schema_version``."""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from edge.store.chain import AUDIT_FIELDS, GENESIS, VERDICT_FIELDS, advance, record_hash

Migration = Callable[[sqlite_utils.Database], None]


def _v1_initial(db: sqlite_utils.Database) -> None:
    db.table("batches").create(
        {"id": int, "lot": str, "product": str, "recipe": str, "operator": str, "station": str,
         "opened_at": str, "closed_at": str, "closed_by": str, "note": str},
        pk="id", not_null={"lot", "station", "opened_at"},
    )
    db.table("parts").create(
        {"id": int, "serial": str, "batch_id": int, "station": str, "source": str, "created_at": str,
         "decision": str, "inspections": int},
        pk="id", not_null={"serial", "station", "created_at"}, foreign_keys=[("batch_id", "batches", "id")],
    )
    db.table("verdicts").create(
        {"id": int, "part_id": int, "modality": str, "model_name": str, "model_version": int, "label": str,
         "score": float, "threshold": float, "decision": str, "reason": str, "latency_ms": float,
         "image_ref": str, "heatmap_ref": str, "source": str, "station": str, "created_at": str, "details": str},
        pk="id", not_null={"part_id", "modality", "decision", "station", "created_at"},
        foreign_keys=[("part_id", "parts", "id")],
    )
    db.table("overrides").create(
        {"id": int, "verdict_id": int, "decision": str, "label": str, "operator": str, "reason": str,
         "created_at": str},
        pk="id", not_null={"verdict_id", "decision", "operator", "created_at"},
        foreign_keys=[("verdict_id", "verdicts", "id")],
    )
    db.table("alarms").create(
        {"id": int, "kind": str, "severity": str, "message": str, "source": str, "raised_at": str,
         "acknowledged_at": str, "acknowledged_by": str, "cleared_at": str},
        pk="id", not_null={"kind", "severity", "message", "raised_at"},
    )
    db.table("audit_log").create(
        {"id": int, "at": str, "actor": str, "action": str, "entity": str, "entity_id": str, "details": str},
        pk="id", not_null={"at", "actor", "action"},
    )
    db.table("parts").create_index(["batch_id"])
    db.table("parts").create_index(["serial"])
    db.table("verdicts").create_index(["part_id"])
    db.table("verdicts").create_index(["created_at"])
    db.table("verdicts").create_index(["model_name", "model_version"])
    db.table("batches").create_index(["lot"])
    db.table("overrides").create_index(["verdict_id"])
    db.execute("CREATE UNIQUE INDEX idx_parts_serial_batch ON parts(serial, COALESCE(batch_id, -1))")


def _v2_line_traceability(db: sqlite_utils.Database) -> None:
    """What the line needs to trace: the recipe a part was judged under, the PLC's trigger number,
    the decision actually sent to the reject gate, and whether the verdict missed its deadline."""
    verdicts = db.table("verdicts")
    verdicts.add_column("recipe", str)
    verdicts.add_column("actuated", str)
    verdicts.add_column("late", int, not_null_default=0)
    db.table("parts").add_column("trigger_seq", int)
    db.table("parts").create_index(["trigger_seq"])


def _v3_trusted_record(db: sqlite_utils.Database) -> None:
    """Append-only, hash-chained verdicts and audit records (see edge.store.chain); who did what as the
    authenticated actor; a lot given by one AOI call kept on its part; users, API tokens and sessions."""
    verdicts = db.table("verdicts")
    for name in ("actor", "prev_hash", "hash"):
        verdicts.add_column(name, str)
    verdicts.add_column("refers_to", int)
    db.table("parts").add_column("lot", str)  # the lot an AOI call gave, when no open batch has it
    db.execute("DROP INDEX idx_parts_serial_batch")
    db.execute("CREATE UNIQUE INDEX idx_parts_serial_lot ON parts(serial, COALESCE(lot, '')) WHERE batch_id IS NULL")
    db.execute("CREATE UNIQUE INDEX idx_parts_serial_in_batch ON parts(serial, batch_id) WHERE batch_id IS NOT NULL")
    audit = db.table("audit_log")
    for name in ("before", "after", "prev_hash", "hash"):
        audit.add_column(name, str)
    db.execute("CREATE TABLE chain_heads (chain TEXT PRIMARY KEY, last_id INTEGER NOT NULL, hash TEXT NOT NULL)")
    # A verdict is never updated once acknowledged: an answer the line got late is recorded beside it.
    db.execute("CREATE TABLE late_answers (verdict_id INTEGER PRIMARY KEY REFERENCES verdicts(id),"
               " actuated TEXT NOT NULL, recorded_at TEXT NOT NULL)")
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,"
               " secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL,"
               " removed_at TEXT, removed_by TEXT)")
    db.execute("CREATE UNIQUE INDEX idx_users_active_name ON users(name) WHERE removed_at IS NULL")
    db.execute("CREATE TABLE api_tokens (id INTEGER PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,"
               " scopes TEXT NOT NULL, created_at TEXT NOT NULL, created_by TEXT NOT NULL, expires_at TEXT,"
               " revoked_at TEXT, revoked_by TEXT)")
    db.execute("CREATE UNIQUE INDEX idx_tokens_active_name ON api_tokens(name) WHERE revoked_at IS NULL")
    db.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, secret_hash TEXT NOT NULL UNIQUE,"
               " user_name TEXT NOT NULL, csrf_hash TEXT NOT NULL, created_at TEXT NOT NULL,"
               " expires_at TEXT NOT NULL, ended_at TEXT)")
    # Chain what an earlier version stored, in id order, so `audit verify` covers it too.
    conn = db.conn
    prev = GENESIS
    last_id = 0
    select = ", ".join(f"p.{c}" if c in ("serial", "batch_id", "lot") else f"v.{c}" for c in VERDICT_FIELDS)
    for row in conn.execute(f"SELECT {select} FROM verdicts v JOIN parts p ON p.id = v.part_id ORDER BY v.id"):
        digest = record_hash(prev, tuple(row))
        conn.execute("UPDATE verdicts SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row[0]))
        prev, last_id = digest, row[0]
    advance(conn, "verdicts", last_id, prev)
    prev, last_id = GENESIS, 0
    for row in conn.execute(f"SELECT {', '.join(AUDIT_FIELDS)} FROM audit_log ORDER BY id"):
        digest = record_hash(prev, tuple(row))
        conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, row[0]))
        prev, last_id = digest, row[0]
    advance(conn, "audit", last_id, prev)


def _v4_batch_figures(db: sqlite_utils.Database) -> None:
    """Running batch figures and SPC state (edge.quality), kept current by a store listener.

    ``batch_id`` 0 stands for parts judged with no batch open. ``period`` is '' (the whole batch),
    ``h:YYYY-MM-DDTHH`` (UTC hour), ``s:YYYY-MM-DD/NAME`` (shift) or ``g:NNNNNNNNN`` (p-chart subgroup)."""
    conn = db.conn
    # Each part's current state, so a re-inspection or an override moves its counts without a scan.
    conn.execute("CREATE TABLE quality_parts (part_id INTEGER PRIMARY KEY, batch_id INTEGER NOT NULL,"
                 " ordinal INTEGER NOT NULL, hour TEXT NOT NULL, shift TEXT NOT NULL, first_decision TEXT NOT NULL,"
                 " current_verdict INTEGER NOT NULL, model_decision TEXT NOT NULL, model_label TEXT,"
                 " override_decision TEXT, override_label TEXT, overridden INTEGER NOT NULL DEFAULT 0,"
                 " inspections INTEGER NOT NULL DEFAULT 1, modalities TEXT NOT NULL)")
    # Counters: one row per batch, period and scope ('' = parts, a modality, or 'model:<name>@<version>')...
    totals = ", ".join(f"{name} INTEGER NOT NULL DEFAULT 0" for name in (
        "parts", "ok", "ng", "invalid", "first_pass_ok", "overridden_parts", "reinspected_parts", "inspections",
        "reinspections", "verdicts", "overrides", "confirmations", "late_answers", "alarms"))
    conn.execute(f"CREATE TABLE quality_totals (batch_id INTEGER NOT NULL, period TEXT NOT NULL, scope TEXT NOT NULL,"
                 f" {totals}, first_at TEXT, last_at TEXT, PRIMARY KEY (batch_id, period, scope)) WITHOUT ROWID")
    conn.execute("CREATE INDEX idx_quality_totals_period ON quality_totals(period)")
    # ... and one per defect label ('label:<defect>') or alarm kind ('alarm:<kind>').
    conn.execute("CREATE TABLE quality_counts (batch_id INTEGER NOT NULL, period TEXT NOT NULL, metric TEXT NOT NULL,"
                 " value INTEGER NOT NULL, PRIMARY KEY (batch_id, period, metric)) WITHOUT ROWID")
    conn.execute("CREATE INDEX idx_quality_counts_period ON quality_counts(period)")
    # Score series for the control charts: one per batch, modality and model version, in verdict order.
    conn.execute("CREATE TABLE quality_series (id INTEGER PRIMARY KEY, batch_id INTEGER NOT NULL,"
                 " modality TEXT NOT NULL, model_name TEXT NOT NULL, model_version INTEGER NOT NULL, recipe TEXT,"
                 " points INTEGER NOT NULL DEFAULT 0, first_at TEXT NOT NULL, last_at TEXT NOT NULL,"
                 " alarmed_seq INTEGER NOT NULL DEFAULT 0)")
    conn.execute("CREATE UNIQUE INDEX idx_quality_series_key ON quality_series(batch_id, modality, model_name,"
                 " model_version)")
    conn.execute("CREATE INDEX idx_quality_series_model ON quality_series(model_name, model_version, last_at)")
    conn.execute("CREATE TABLE quality_scores (series_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
                 " verdict_id INTEGER NOT NULL, score REAL NOT NULL, decision TEXT NOT NULL, at TEXT NOT NULL,"
                 " PRIMARY KEY (series_id, seq)) WITHOUT ROWID")
    # Where the figures begin: on a database upgraded with verdicts in it, earlier batches have none.
    conn.execute("CREATE TABLE quality_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO quality_meta (key, value) VALUES ('started_at', ?)",
                 (datetime.now(UTC).isoformat(timespec="microseconds"),))
    # Batch reports written after a batch closes (files in the data folder, named by batch id only).
    conn.execute("CREATE TABLE quality_reports (batch_id INTEGER PRIMARY KEY, pdf TEXT, csv TEXT,"
                 " generated_at TEXT NOT NULL, error TEXT)")


def _v5_outbox(db: sqlite_utils.Database) -> None:
    """The outbox of records to push upstream (edge.upstream), written with each record.

    ``outbox``: one row per message owed to the plant, in the order the records committed (AUTOINCREMENT,
    so an id is never reused after its row is pruned). ``outbox_sinks``: per destination (mqtt, webhook),
    the last outbox id it has delivered; rows every active destination has delivered are deleted."""
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
               " idempotency_key TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL)")
    db.execute("CREATE TABLE outbox_sinks (sink TEXT PRIMARY KEY, delivered_id INTEGER NOT NULL,"
               " delivered_at TEXT)")


def _v6_pull_indexes(db: sqlite_utils.Database) -> None:
    """What the pull API filters on (edge.store.queries): a part's own lot (outside any batch; with batch_id the
    index covers the lot filter), the model's decision and label. Each index ends in the row id, so a filter
    reads its matches already in cursor order."""
    db.execute("CREATE INDEX IF NOT EXISTS idx_parts_lot ON parts(lot, batch_id)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_verdicts_decision ON verdicts(decision)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_verdicts_label ON verdicts(label)")


def _v7_workbench(db: sqlite_utils.Database) -> None:
    """The maintenance workbench (edge.workbench): labelled samples and retraining jobs.

    ``samples``: one row per kept part (``verdict_id`` unique): from an operator's override or confirmation
    (origin 'override') or the near-threshold sampler ('sampler'); ``label`` 'good' or a defect label (NULL:
    not labelled yet); ``excluded`` 1 keeps it out of training and comparison. ``training_jobs``: one row per
    retraining run; ``held_out`` the sample ids kept out of it (JSON), on which its candidate is compared."""
    db.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY, verdict_id INTEGER NOT NULL UNIQUE REFERENCES"
               " verdicts(id), origin TEXT NOT NULL, label TEXT, excluded INTEGER NOT NULL DEFAULT 0,"
               " image_ref TEXT, score REAL, threshold REAL, model_name TEXT, model_version INTEGER,"
               " created_at TEXT NOT NULL, updated_at TEXT NOT NULL, updated_by TEXT NOT NULL)")
    db.execute("CREATE INDEX idx_samples_label ON samples(label, excluded)")
    db.execute("CREATE TABLE training_jobs (id INTEGER PRIMARY KEY, model_name TEXT NOT NULL, mode TEXT NOT NULL,"
               " state TEXT NOT NULL, fraction REAL NOT NULL DEFAULT 0, stage TEXT, eta_s REAL,"
               " requested_by TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,"
               " trained_on TEXT NOT NULL, held_out TEXT NOT NULL, candidate_version INTEGER,"
               " base_version INTEGER, error TEXT)")


def _v8_archives(db: sqlite_utils.Database) -> None:
    """Verdict rows moved to archive files (edge.store.archiving): ``archives`` lists each file with its id
    range and the chain hashes at both ends; ``chain_anchors`` holds the last archived record of a chain, so
    the live chain starts from its hash. Overrides, late answers and workbench samples outlive the verdicts
    they refer to (the QMS feeds and training carry them): their foreign keys to ``verdicts`` are dropped."""
    conn = db.conn
    conn.execute("CREATE TABLE archives (id INTEGER PRIMARY KEY, chain TEXT NOT NULL, file TEXT NOT NULL UNIQUE,"
                 " first_id INTEGER NOT NULL, last_id INTEGER NOT NULL, records INTEGER NOT NULL,"
                 " prev_hash TEXT NOT NULL, last_hash TEXT NOT NULL, sha256 TEXT NOT NULL,"
                 " first_at TEXT NOT NULL, last_at TEXT NOT NULL, created_at TEXT NOT NULL)")
    conn.execute("CREATE TABLE chain_anchors (chain TEXT PRIMARY KEY, last_id INTEGER NOT NULL, hash TEXT NOT NULL)")
    for table in ("overrides", "late_answers", "samples"):
        _drop_verdict_keys(conn, table)


_VERDICT_KEY = re.compile(r'\s*REFERENCES\s+"?verdicts"?\s*\(\s*"?id"?\s*\)', re.IGNORECASE)


def _drop_verdict_keys(conn: sqlite3.Connection, table: str) -> None:
    """Rebuild ``table`` as it is, less its REFERENCES verdicts(id) clauses (SQLite cannot drop a key in place)."""
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if row is None or not _VERDICT_KEY.search(row[0]):
        return
    indexes = [r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                                          " AND sql IS NOT NULL", (table,))]
    rebuilt = re.sub(rf'^CREATE TABLE\s+"?{table}"?', f'CREATE TABLE "{table}_rebuilt"', _VERDICT_KEY.sub("", row[0]))
    conn.execute(rebuilt)
    conn.execute(f'INSERT INTO "{table}_rebuilt" SELECT * FROM "{table}"')
    conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f'ALTER TABLE "{table}_rebuilt" RENAME TO "{table}"')
    for index in indexes:
        conn.execute(index)


MIGRATIONS: list[tuple[int, str, Migration]] = [
    (1, "initial schema: batches, parts, verdicts, overrides, alarms, audit log", _v1_initial),
    (2, "line traceability: recipe, trigger sequence, actuated decision, late flag", _v2_line_traceability),
    (3, "trusted record: hash chains, append-only verdicts, actors, users, tokens, sessions", _v3_trusted_record),
    (4, "batch figures and SPC state", _v4_batch_figures),
    (5, "outbox for the upstream link", _v5_outbox),
    (6, "indexes for the pull API", _v6_pull_indexes),
    (7, "maintenance workbench: samples and retraining jobs", _v7_workbench),
    (8, "verdict archives: archive files, chain anchors; overrides outlive archived verdicts", _v8_archives),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def current_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(db: sqlite_utils.Database, path: Path | None = None) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied.

    An existing database is copied beside itself before its first pending migration.
    """
    version = current_version(db)
    if version > LATEST_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this software supports ({LATEST_VERSION}); "
            "upgrade edge-inspect or use another data folder"
        )
    pending = [m for m in MIGRATIONS if m[0] > version]
    if pending and version > 0 and path is not None:
        backup = path.with_name(f"{path.name}.v{version}.bak")
        db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy2(path, backup)
    applied = []
    for number, description, apply in pending:
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            if "schema_version" not in db.table_names():
                db.table("schema_version").create({"version": int, "description": str, "applied_at": str}, pk="version")
            apply(db)
            db.table("schema_version").insert(
                {"version": number, "description": description, "applied_at": datetime.now(UTC).isoformat()}
            )
        applied.append(number)
    return applied


def connect(path: Path, readonly: bool = False, sync: str = "full") -> sqlite3.Connection:
    """A connection in WAL mode in autocommit (transactions are explicit).

    ``sync="full"`` fsyncs every commit, so a commit survives power loss; ``"normal"`` survives a
    killed process but may lose the last commits on power loss (faster on slow disks).
    """
    if sync not in ("full", "normal"):
        raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync.upper()}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.row_factory = sqlite3.Row
    return conn
