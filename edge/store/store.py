"""VerdictStore: the station's record of batches, parts, verdicts, overrides, alarms and audit."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.store.records import DECISIONS, NewVerdict, PartContext, StoredVerdict
from edge.store.schema import connect, migrate
from edge.store.writer import SqliteWriter, StoreUnavailableError

__all__ = ["StoreUnavailableError", "VerdictStore", "utc_now"]


class StoreError(ValueError):
    """A request the store refuses (unknown id, closed batch, ...); nothing was changed."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


_VERDICT_SQL = (
    "INSERT INTO verdicts (part_id, modality, model_name, model_version, label, score, threshold, decision,"
    " reason, latency_ms, image_ref, heatmap_ref, source, station, created_at, details, recipe, actuated, late)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_VERDICT_VIEW = """
SELECT v.id, v.part_id, p.serial, p.batch_id, b.lot, b.product, v.station, v.source, v.modality,
       v.model_name, v.model_version, v.label, v.score, v.threshold, v.decision, v.reason, v.latency_ms,
       v.image_ref, v.heatmap_ref, v.created_at, v.details, v.recipe, v.actuated, v.late, p.trigger_seq,
       o.decision AS override_decision, o.label AS override_label, o.operator AS override_operator,
       o.reason AS override_reason, o.created_at AS override_at
FROM verdicts v
JOIN parts p ON p.id = v.part_id
LEFT JOIN batches b ON b.id = p.batch_id
LEFT JOIN overrides o ON o.id = (SELECT MAX(id) FROM overrides WHERE verdict_id = v.id)
"""


class VerdictStore:
    def __init__(self, path: Path, commit_interval_s: float = 0.0, max_batch: int = 1000,
                 sync: str = "full") -> None:
        self.path = path
        self.sync = sync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_conn = connect(path, sync=sync)
        migrate(sqlite_utils.Database(self._write_conn), path)
        self._writer = SqliteWriter(self._write_conn, commit_interval_s, max_batch)
        self._local = threading.local()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        self._write_conn.close()

    @property
    def writer(self) -> SqliteWriter:
        return self._writer

    def writable(self) -> bool:
        """True when the writer runs and the data folder accepts files."""
        return self._writer.alive and os.access(self.path.parent, os.W_OK)

    def _reader(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite_utils.Database(connect(self.path, sync=self.sync))
            db.execute("PRAGMA query_only=ON")
            self._local.db = db
        return db

    # -- writes (each returns a Future resolved once durable) -----------------------------------
    def record(self, part: PartContext, verdicts: list[NewVerdict],
               overall: str | None = None) -> Future[StoredVerdict]:
        """Store one part's verdicts; the Future gives the first verdict's id once committed."""
        if not verdicts:
            raise ValueError("a part needs at least one verdict")
        decision = overall or verdicts[0].decision
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> StoredVerdict:
            batch_id = _batch_for(conn, part, now)
            serial = part.serial or f"{part.station}-{uuid.uuid4().hex[:12]}"
            row = conn.execute(
                "SELECT id FROM parts WHERE serial = ? AND COALESCE(batch_id, -1) = COALESCE(?, -1)",
                (serial, batch_id),
            ).fetchone()
            if row is None:
                part_id = conn.execute(
                    "INSERT INTO parts (serial, batch_id, station, source, created_at, decision, inspections,"
                    " trigger_seq) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                    (serial, batch_id, part.station, part.source, now, decision, part.trigger_seq),
                ).lastrowid
            else:
                part_id = row[0]
                conn.execute("UPDATE parts SET decision = ?, inspections = inspections + 1 WHERE id = ?",
                             (decision, part_id))
            first_id: int | None = None
            for v in verdicts:
                cursor = conn.execute(_VERDICT_SQL, (
                    part_id, v.modality, v.model_name, v.model_version, v.label, v.score, v.threshold, v.decision,
                    v.reason, v.latency_ms, v.image_ref, v.heatmap_ref, part.source, part.station, now,
                    json.dumps(v.details) if v.details else None, v.recipe, v.actuated, int(v.late),
                ))
                first_id = first_id if first_id is not None else cursor.lastrowid
            assert first_id is not None and part_id is not None
            return StoredVerdict(first_id, int(part_id), serial, batch_id, now)

        return self._writer.submit(operation)

    def mark_late(self, verdict_id: int, actuated: str) -> Future[None]:
        """Record that a verdict missed its deadline and the line got ``actuated`` instead."""
        def operation(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE verdicts SET late = 1, actuated = ? WHERE id = ?", (actuated, verdict_id))

        return self._writer.submit(operation)

    def open_batch(self, lot: str, station: str, product: str | None = None, recipe: str | None = None,
                   operator: str | None = None, note: str | None = None) -> Future[dict[str, Any]]:
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> dict[str, Any]:
            still_open = conn.execute(
                "SELECT id, lot FROM batches WHERE station = ? AND closed_at IS NULL", (station,)
            ).fetchall()
            for row in still_open:  # one open batch per station: opening a new one closes the last
                conn.execute("UPDATE batches SET closed_at = ?, closed_by = ? WHERE id = ?",
                             (now, operator or "system", row["id"]))
                _audit(conn, now, operator or "system", "close_batch", "batch", row["id"],
                       {"lot": row["lot"], "why": f"batch {lot} opened"})
            batch_id = conn.execute(
                "INSERT INTO batches (lot, product, recipe, operator, station, opened_at, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", (lot, product, recipe, operator, station, now, note),
            ).lastrowid
            _audit(conn, now, operator or "unknown", "open_batch", "batch", batch_id,
                   {"lot": lot, "product": product, "recipe": recipe})
            return dict(conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone())

        return self._writer.submit(operation)

    def close_batch(self, batch_id: int, operator: str | None = None) -> Future[dict[str, Any]]:
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise StoreError(f"batch {batch_id} does not exist")
            if row["closed_at"] is not None:
                raise StoreError(f"batch {batch_id} (lot {row['lot']}) was already closed at {row['closed_at']}")
            conn.execute("UPDATE batches SET closed_at = ?, closed_by = ? WHERE id = ?", (now, operator, batch_id))
            _audit(conn, now, operator or "unknown", "close_batch", "batch", batch_id, {"lot": row["lot"]})
            return dict(conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone())

        return self._writer.submit(operation)

    def override(self, verdict_id: int, decision: str, operator: str, reason: str | None = None,
                 label: str | None = None) -> Future[dict[str, Any]]:
        if decision not in DECISIONS:
            raise StoreError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT decision, label FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
            if row is None:
                raise StoreError(f"verdict {verdict_id} does not exist")
            override_id = conn.execute(
                "INSERT INTO overrides (verdict_id, decision, label, operator, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (verdict_id, decision, label, operator, reason, now),
            ).lastrowid
            _audit(conn, now, operator, "override", "verdict", verdict_id,
                   {"from": row["decision"], "to": decision, "label": label, "reason": reason})
            return dict(conn.execute("SELECT * FROM overrides WHERE id = ?", (override_id,)).fetchone())

        return self._writer.submit(operation)

    def raise_alarm(self, kind: str, message: str, severity: str = "warning",
                    source: str | None = None) -> Future[int]:
        """Raise an alarm unless the same kind from the same source is already active."""
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> int:
            active = conn.execute(
                "SELECT id FROM alarms WHERE kind = ? AND COALESCE(source, '') = COALESCE(?, '')"
                " AND cleared_at IS NULL AND acknowledged_at IS NULL", (kind, source),
            ).fetchone()
            if active is not None:
                return int(active[0])
            return int(conn.execute(
                "INSERT INTO alarms (kind, severity, message, source, raised_at) VALUES (?, ?, ?, ?, ?)",
                (kind, severity, message, source, now),
            ).lastrowid or 0)

        return self._writer.submit(operation)

    def acknowledge_alarm(self, alarm_id: int, operator: str) -> Future[dict[str, Any]]:
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone()
            if row is None:
                raise StoreError(f"alarm {alarm_id} does not exist")
            if row["acknowledged_at"] is None:
                conn.execute("UPDATE alarms SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                             (now, operator, alarm_id))
                _audit(conn, now, operator, "acknowledge_alarm", "alarm", alarm_id, {"kind": row["kind"]})
            return dict(conn.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone())

        return self._writer.submit(operation)

    def audit(self, actor: str, action: str, entity: str, entity_id: str | int | None,
              details: dict[str, Any] | None = None) -> Future[None]:
        now = utc_now()

        def operation(conn: sqlite3.Connection) -> None:
            _audit(conn, now, actor, action, entity, entity_id, details or {})

        return self._writer.submit(operation)

    # -- reads ---------------------------------------------------------------------------------
    def verdict(self, verdict_id: int) -> dict[str, Any] | None:
        rows = list(self._reader().query(_VERDICT_VIEW + " WHERE v.id = ?", [verdict_id]))
        return _decode(rows[0]) if rows else None

    def verdicts_since(self, cursor: int, limit: int) -> list[dict[str, Any]]:
        """Verdicts with id > cursor in id order; ids grow in commit order, so paging never skips one."""
        sql = _VERDICT_VIEW + " WHERE v.id > ? ORDER BY v.id LIMIT ?"
        return [_decode(row) for row in self._reader().query(sql, [cursor, limit])]

    def batches(self, open_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        where = "WHERE closed_at IS NULL" if open_only else ""
        return list(self._reader().query(f"SELECT * FROM batches {where} ORDER BY id DESC LIMIT ?", [limit]))

    def batch(self, batch_id: int) -> dict[str, Any] | None:
        rows = list(self._reader().query("SELECT * FROM batches WHERE id = ?", [batch_id]))
        return rows[0] if rows else None

    def alarms(self, active_only: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        where = "WHERE acknowledged_at IS NULL AND cleared_at IS NULL" if active_only else ""
        return list(self._reader().query(f"SELECT * FROM alarms {where} ORDER BY id DESC LIMIT ?", [limit]))

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return [_decode(r) for r in self._reader().query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", [limit])]

    def counts(self) -> dict[str, int]:
        db = self._reader()
        return {name: db[name].count for name in ("batches", "parts", "verdicts", "overrides", "alarms", "audit_log")}


def _batch_for(conn: sqlite3.Connection, part: PartContext, now: str) -> int | None:
    """The batch a part belongs to: the open batch with its lot (opened on demand), else the station's."""
    if part.lot:
        row = conn.execute(
            "SELECT id FROM batches WHERE lot = ? AND station = ? AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
            (part.lot, part.station),
        ).fetchone()
        if row is not None:
            return int(row[0])
        batch_id = conn.execute(
            "INSERT INTO batches (lot, station, opened_at, operator, note) VALUES (?, ?, ?, ?, ?)",
            (part.lot, part.station, now, part.source, "opened automatically by the first part of this lot"),
        ).lastrowid
        _audit(conn, now, part.source, "open_batch", "batch", batch_id, {"lot": part.lot, "automatic": True})
        return int(batch_id or 0)
    row = conn.execute(
        "SELECT id FROM batches WHERE station = ? AND closed_at IS NULL ORDER BY id DESC LIMIT 1", (part.station,)
    ).fetchone()
    return int(row[0]) if row is not None else None


def _audit(conn: sqlite3.Connection, at: str, actor: str, action: str, entity: str,
           entity_id: str | int | None, details: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, entity, entity_id, details) VALUES (?, ?, ?, ?, ?, ?)",
        (at, actor, action, entity, None if entity_id is None else str(entity_id), json.dumps(details)),
    )


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    details = row.get("details")
    if isinstance(details, str):
        row = {**row, "details": json.loads(details)}
    return row
