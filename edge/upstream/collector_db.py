"""The collector's central database: every message once (a UNIQUE idempotency key), verdicts in a table a QMS
can query, and each station's latest state. SQLite by default, PostgreSQL when given a postgresql:// URL."""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.store.chain import GENESIS
from edge.upstream.topics import REPLAY

VERDICT_COLUMNS = ("idempotency_key", "station", "id", "part_id", "serial", "batch_id", "lot", "product", "modality",
                   "model_name", "model_version", "label", "score", "threshold", "decision", "reason", "recipe",
                   "actuated", "late", "trigger_seq", "created_at", "hash", "prev_hash")

_TABLES = (
    "CREATE TABLE IF NOT EXISTS messages (idempotency_key TEXT PRIMARY KEY, station TEXT NOT NULL,"
    " kind TEXT NOT NULL, event TEXT, topic TEXT NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS verdicts (idempotency_key TEXT PRIMARY KEY, station TEXT NOT NULL, id BIGINT NOT NULL,"
    " part_id BIGINT, serial TEXT, batch_id BIGINT, lot TEXT, product TEXT, modality TEXT, model_name TEXT,"
    " model_version BIGINT, label TEXT, score DOUBLE PRECISION, threshold DOUBLE PRECISION, decision TEXT,"
    " reason TEXT, recipe TEXT, actuated TEXT, late BOOLEAN, trigger_seq BIGINT, created_at TEXT, hash TEXT,"
    " prev_hash TEXT,"
    " override_decision TEXT, override_label TEXT, override_operator TEXT, override_at TEXT)",
    "CREATE INDEX IF NOT EXISTS idx_verdicts_station_id ON verdicts (station, id)",
    "CREATE INDEX IF NOT EXISTS idx_verdicts_lot ON verdicts (lot)",
    "CREATE INDEX IF NOT EXISTS idx_verdicts_station_hash ON verdicts (station, hash)",
    "CREATE INDEX IF NOT EXISTS idx_verdicts_serial ON verdicts (serial)",
    "CREATE TABLE IF NOT EXISTS station_state (station TEXT PRIMARY KEY, state TEXT, payload TEXT NOT NULL,"
    " updated_at TEXT NOT NULL)",
)


@dataclass(frozen=True)
class Incoming:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class Parsed:
    topic: str
    body: dict[str, Any]
    text: str


class CollectorDatabaseError(RuntimeError):
    """The central database cannot be opened or used; the message says what to do."""


class CollectorDatabase(ABC):
    """Writes one batch of messages in one transaction; a message already stored is ignored."""

    placeholder = "?"

    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.rejected = 0

    @abstractmethod
    def _connection(self) -> Any: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _create(self) -> None:
        cursor = self._connection().cursor()
        for statement in _TABLES:
            cursor.execute(statement)
        self._commit()

    def store(self, batch: Sequence[Incoming]) -> int:
        """Store a batch; returns how many were new. Raises on a database error (nothing of the batch is kept)."""
        q = self.placeholder
        cursor = self._connection().cursor()
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        new = 0
        try:
            for item in batch:
                parsed = _parse(item)
                if parsed is None:
                    self.rejected += 1
                    continue
                body = parsed.body
                kind = parsed.topic.rsplit("/", 1)[-1]
                if kind == REPLAY:  # a request to a station (this collector's own, or another consumer's)
                    continue
                station = str(body.get("station") or "")
                if kind == "state":
                    cursor.execute(
                        f"INSERT INTO station_state (station, state, payload, updated_at) VALUES ({q}, {q}, {q}, {q})"
                        " ON CONFLICT (station) DO UPDATE SET state = excluded.state, payload = excluded.payload,"
                        " updated_at = excluded.updated_at", (station, body.get("state"), parsed.text, now))
                    continue
                key = body.get("idempotency_key")
                if not isinstance(key, str) or not key:
                    self.rejected += 1
                    continue
                cursor.execute(
                    f"INSERT INTO messages (idempotency_key, station, kind, event, topic, payload, received_at)"
                    f" VALUES ({q}, {q}, {q}, {q}, {q}, {q}, {q}) ON CONFLICT (idempotency_key) DO NOTHING",
                    (key, station, kind, body.get("event"), parsed.topic, parsed.text, now))
                if cursor.rowcount != 1:
                    self.duplicates += 1
                    continue
                new += 1
                self._apply(cursor, kind, body)
            self._commit()
        except Exception:
            self._rollback()
            raise
        self.stored += new
        return new

    def _apply(self, cursor: Any, kind: str, body: dict[str, Any]) -> None:
        q = self.placeholder
        event = body.get("event")
        if kind == "verdicts" and event == "stored":
            values = [body.get(c) for c in VERDICT_COLUMNS]
            cursor.execute(f"INSERT INTO verdicts ({', '.join(VERDICT_COLUMNS)}) VALUES"
                           f" ({', '.join([q] * len(VERDICT_COLUMNS))}) ON CONFLICT (idempotency_key) DO NOTHING",
                           values)
        elif kind == "verdicts" and event == "late":
            cursor.execute(f"UPDATE verdicts SET actuated = {q}, late = {q} WHERE station = {q} AND hash = {q}",
                           (body.get("actuated"), bool(body.get("late")), body.get("station"), body.get("hash")))
        elif kind == "overrides":
            cursor.execute(f"UPDATE verdicts SET override_decision = {q}, override_label = {q},"
                           f" override_operator = {q}, override_at = {q} WHERE station = {q} AND hash = {q}",
                           (body.get("decision"), body.get("label"), body.get("operator"), body.get("created_at"),
                            body.get("station"), body.get("verdict_hash")))


    def completeness(self, max_gaps: int = 20) -> dict[str, dict[str, Any]]:
        """Per station: verdicts held, first and last id, and the verdicts whose predecessor in the station's
        hash chain is missing (a gap lies just before each; the pull API's ``since`` cursor refills it)."""
        q = self.placeholder
        cursor = self._connection().cursor()
        cursor.execute("SELECT station, COUNT(*), MIN(id), MAX(id) FROM verdicts GROUP BY station ORDER BY station")
        report = {str(r[0]): {"verdicts": int(r[1]), "first_id": r[2], "last_id": r[3], "gaps_before": []}
                  for r in cursor.fetchall()}
        cursor.execute(
            "SELECT v.station, v.id FROM verdicts v WHERE v.prev_hash IS NOT NULL AND v.prev_hash <> "
            f"{q} AND NOT EXISTS (SELECT 1 FROM verdicts p WHERE p.station = v.station AND p.hash = v.prev_hash)"
            " ORDER BY v.station, v.id", (GENESIS,))
        for station, verdict_id in cursor.fetchall():
            gaps = report[str(station)]["gaps_before"]
            if len(gaps) < max_gaps:
                gaps.append(verdict_id)
        self._commit()
        return report


    def missing_ranges(self, limit: int = 100) -> list[tuple[str, int, int]]:
        """(station, first id, last id) of each run of verdicts the chain says is missing."""
        q = self.placeholder
        cursor = self._connection().cursor()
        ranges = []
        for station, gaps in ((s, r["gaps_before"]) for s, r in self.completeness(limit).items()):
            for verdict_id in gaps:
                cursor.execute(f"SELECT MAX(id) FROM verdicts WHERE station = {q} AND id < {q}", (station, verdict_id))
                before = cursor.fetchone()[0]
                ranges.append((station, int(before or 0) + 1, int(verdict_id) - 1))
        self._commit()
        return ranges


def _parse(item: Incoming) -> Parsed | None:
    try:
        text = item.payload.decode("utf-8")
        body = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return Parsed(item.topic, body, text) if isinstance(body, dict) else None


class SqliteCollectorDatabase(CollectorDatabase):
    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise CollectorDatabaseError(f"cannot open the collector database {path}: {exc}") from exc
        self._conn.execute("BEGIN")
        self._create()  # commits, and opens the next transaction

    def _connection(self) -> sqlite3.Connection:
        return self._conn

    def _commit(self) -> None:
        self._conn.execute("COMMIT")
        self._conn.execute("BEGIN")

    def _rollback(self) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.execute("BEGIN")

    def close(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._conn.close()


class PostgresCollectorDatabase(CollectorDatabase):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise CollectorDatabaseError(
                "a postgresql:// database needs the psycopg driver: pip install 'psycopg[binary]' "
                "(or use --db PATH for SQLite)") from exc
        try:
            self._conn = psycopg.connect(url)
        except psycopg.Error as exc:
            shown = url.split("@", 1)[-1]
            raise CollectorDatabaseError(f"cannot connect to PostgreSQL at {shown}: {exc}") from exc
        self._create()

    def _connection(self) -> Any:
        return self._conn

    def _commit(self) -> None:
        self._conn.commit()

    def _rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()


def open_collector_database(db_path: Path | None, db_url: str | None) -> CollectorDatabase:
    if db_url is not None:
        if not db_url.startswith(("postgresql://", "postgres://")):
            raise CollectorDatabaseError("--db-url must be a postgresql://USER@HOST/DB URL (or use --db PATH)")
        return PostgresCollectorDatabase(db_url)
    return SqliteCollectorDatabase(db_path or Path("fleet.db"))
