"""VerdictStore: the station's record of batches, parts, verdicts, overrides, alarms and audit.

The record is append-only where it matters: a verdict is never changed once acknowledged (a late
answer, an override or a re-inspection is a new record that refers to it), and every state change
writes a chained audit record in the same transaction (see edge.store.chain)."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from edge.store.chain import (
    VERDICT_FIELDS,
    advance,
    anchor,
    append_audit,
    commit_time,
    head,
    next_id,
    record_hash,
    to_json,
    utc_now,
)
from edge.store.records import (
    DECISIONS,
    SYSTEM_ACTOR,
    Alarm,
    AuditEntry,
    Batch,
    Decision,
    NewVerdict,
    Override,
    PartContext,
    RecordEvent,
    RecordListener,
    StoredVerdict,
    Verdict,
    from_row,
)
from edge.store.schema import connect, migrate
from edge.store.writer import SqliteWriter, StoreUnavailableError

__all__ = ["ConflictError", "NotFoundError", "StoreError", "StoreUnavailableError", "VerdictStore", "utc_now"]

T = TypeVar("T")
MAX_ID = 2**63 - 1  # SQLite's largest integer: a larger id names no record


class StoreError(ValueError):
    """A request the store refuses; nothing was changed."""


class NotFoundError(StoreError):
    """The record named does not exist."""


class ConflictError(StoreError):
    """The record exists but its state forbids the change (a closed batch, an open one, ...)."""


_PART_FIELDS = ("serial", "batch_id", "lot")  # chained with the verdict, stored on its part
_VERDICT_COLUMNS = [c for c in VERDICT_FIELDS if c not in _PART_FIELDS] + ["prev_hash", "hash"]
_VERDICT_SQL = f"INSERT INTO verdicts ({', '.join(_VERDICT_COLUMNS)}) VALUES ({', '.join('?' * len(_VERDICT_COLUMNS))})"

VERDICT_VIEW = """
SELECT v.id, v.part_id, p.serial, p.batch_id, COALESCE(b.lot, p.lot) AS lot, b.product, v.station, v.source,
       v.modality, v.model_name, v.model_version, v.label, v.score, v.threshold, v.decision, v.reason,
       v.latency_ms, v.image_ref, v.heatmap_ref, v.created_at, v.details, v.recipe,
       COALESCE(la.actuated, v.actuated) AS actuated, (v.late OR la.verdict_id IS NOT NULL) AS late,
       p.trigger_seq, v.actor, v.refers_to, v.hash,
       o.decision AS override_decision, o.label AS override_label, o.operator AS override_operator,
       o.reason AS override_reason, o.created_at AS override_at, o.id AS override_id
FROM verdicts v
JOIN parts p ON p.id = v.part_id
LEFT JOIN batches b ON b.id = p.batch_id
LEFT JOIN late_answers la ON la.verdict_id = v.id
LEFT JOIN overrides o ON o.id = (SELECT MAX(id) FROM overrides WHERE verdict_id = v.id)
"""


def valid_id(value: int) -> bool:
    return 0 <= value <= MAX_ID


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
        self._listeners: list[RecordListener] = []

    def add_listener(self, listener: RecordListener) -> None:
        """Tell ``listener`` of every change, inside its transaction (see RecordEvent). Add before start()."""
        self._listeners.append(listener)

    def _emit(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        for listener in self._listeners:
            listener(conn, event)

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

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``operation`` in the writer's next transaction; the Future resolves once it is durable.
        An exception it raises rolls back that operation alone and is set on the Future."""
        return self._writer.submit(operation)

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection (rows are sqlite3.Row)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, sync=self.sync)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    # -- writes (each returns a Future resolved once durable) -----------------------------------
    def record(self, part: PartContext, verdicts: list[NewVerdict],
               overall: str | None = None) -> Future[StoredVerdict]:
        """Store one part's verdicts, chained; the Future gives the first verdict's id once committed.

        A lot given with the part joins the station's open batch of that lot; with no such batch the
        lot stays on this part alone (no batch is ever opened or switched by a judged part)."""
        if not verdicts:
            raise ValueError("a part needs at least one verdict")
        decision = overall or verdicts[0].decision
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")

        def operation(conn: sqlite3.Connection) -> StoredVerdict:
            now = commit_time(conn, "verdicts", "created_at")
            batch_id = _batch_for(conn, part)
            serial = part.serial or f"{part.station}-{uuid.uuid4().hex[:12]}"
            part_id, lot = _part_for(conn, part, serial, batch_id, decision, now)
            last_id, prev = head(conn, "verdicts")
            last_id = max(last_id, next_id(conn, "verdicts") - 1)  # never reuse the id of a vanished tail row
            ids: list[int] = []
            for v in verdicts:
                previous = conn.execute("SELECT MAX(id) FROM verdicts WHERE part_id = ? AND modality = ?",
                                        (part_id, v.modality)).fetchone()[0]
                verdict_id = last_id + 1
                values = _verdict_values(verdict_id, part_id, serial, batch_id, lot, part, v, now, previous)
                digest = record_hash(prev, values)
                conn.execute(_VERDICT_SQL, (*values[:2], *values[5:], prev, digest))
                prev, last_id = digest, verdict_id
                ids.append(verdict_id)
            advance(conn, "verdicts", last_id, prev)
            self._emit(conn, RecordEvent("verdicts", "stored", tuple(ids)))
            return StoredVerdict(ids[0], part_id, serial, batch_id, now, tuple(ids), lot)

        return self._writer.submit(operation)

    def mark_late(self, verdict_id: int, actuated: str, actor: str = SYSTEM_ACTOR) -> Future[None]:
        """Record that the line got ``actuated`` instead of a verdict that missed its deadline (the
        verdict itself is not changed)."""
        def operation(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT actuated FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
            if row is None:
                raise NotFoundError(_missing(conn, verdict_id))
            now = utc_now()
            conn.execute("INSERT OR REPLACE INTO late_answers (verdict_id, actuated, recorded_at) VALUES (?, ?, ?)",
                         (verdict_id, actuated, now))
            audit_id = append_audit(conn, actor, "verdict_answered_late", "verdict", verdict_id,
                                    {"actuated": row["actuated"]}, {"actuated": actuated, "late": True})
            self._emit(conn, RecordEvent("late_answer", "late", (verdict_id,), audit_id))

        return self._writer.submit(operation)

    def open_batch(self, lot: str, station: str, actor: str, product: str | None = None,
                   recipe: str | None = None, note: str | None = None) -> Future[Batch]:
        """Open a batch; refused while the station has one open (close it first)."""
        def operation(conn: sqlite3.Connection) -> Batch:
            still_open = conn.execute("SELECT id, lot FROM batches WHERE station = ? AND closed_at IS NULL",
                                      (station,)).fetchone()
            if still_open is not None:
                raise ConflictError(f"batch {still_open['id']} (lot {still_open['lot']}) is still open on station "
                                    f"{station}: close it first (POST /api/v1/batches/{still_open['id']}/close)")
            now = commit_time(conn, "batches", "opened_at")
            batch_id = conn.execute(
                "INSERT INTO batches (lot, product, recipe, operator, station, opened_at, note)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)", (lot, product, recipe, actor, station, now, note),
            ).lastrowid
            batch = _batch(conn, int(batch_id or 0))
            audit_id = append_audit(conn, actor, "batch_opened", "batch", batch.id, None, _public(asdict(batch)))
            self._emit(conn, RecordEvent("batch", "opened", (batch.id,), audit_id))
            return batch

        return self._writer.submit(operation)

    def close_batch(self, batch_id: int, actor: str) -> Future[Batch]:
        def operation(conn: sqlite3.Connection) -> Batch:
            before = _batch(conn, batch_id)
            if before.closed_at is not None:
                raise ConflictError(f"batch {batch_id} (lot {before.lot}) was already closed at {before.closed_at}")
            conn.execute("UPDATE batches SET closed_at = ?, closed_by = ? WHERE id = ?",
                         (utc_now(), actor, batch_id))
            after = _batch(conn, batch_id)
            audit_id = append_audit(conn, actor, "batch_closed", "batch", batch_id,
                                    {"closed_at": None, "closed_by": None},
                                    {"closed_at": after.closed_at, "closed_by": after.closed_by, "lot": after.lot})
            self._emit(conn, RecordEvent("batch", "closed", (batch_id,), audit_id))
            return after

        return self._writer.submit(operation)

    def override(self, verdict_id: int, decision: Decision, actor: str, reason: str | None = None,
                 label: str | None = None, expected_override: int | None = None) -> Future[Override]:
        """An operator's confirmation or correction: a new record referring to the verdict. With
        ``expected_override`` (the latest override id the operator saw, 0 for none) it is refused with a
        ConflictError when someone else overrode the verdict meanwhile."""
        if decision not in DECISIONS:
            raise StoreError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")

        def operation(conn: sqlite3.Connection) -> Override:
            if not valid_id(verdict_id):
                raise NotFoundError(f"verdict {verdict_id} does not exist")
            row = conn.execute(
                "SELECT v.decision, v.label, o.id AS o_id, o.decision AS o_decision, o.label AS o_label FROM verdicts v"
                " LEFT JOIN overrides o ON o.id = (SELECT MAX(id) FROM overrides WHERE verdict_id = v.id)"
                " WHERE v.id = ?", (verdict_id,)).fetchone()
            if row is None:
                raise NotFoundError(_missing(conn, verdict_id))
            latest = int(row["o_id"] or 0)
            if expected_override is not None and latest != expected_override:
                raise ConflictError(f"verdict {verdict_id} was decided meanwhile (override {latest}); "
                                    "look at it again before deciding")
            now = utc_now()
            override_id = conn.execute(
                "INSERT INTO overrides (verdict_id, decision, label, operator, reason, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (verdict_id, decision, label, actor, reason, now),
            ).lastrowid
            before = {"decision": row["o_decision"] or row["decision"], "label": row["o_label"] or row["label"]}
            changed = decision != before["decision"]
            audit_id = append_audit(conn, actor, "verdict_overridden" if changed else "verdict_confirmed", "verdict",
                                    verdict_id, before,
                                    {"decision": decision, "label": label or before["label"], "reason": reason},
                                    {"override_id": override_id})
            self._emit(conn, RecordEvent("override", "overridden" if changed else "confirmed",
                                         (int(override_id or 0),), audit_id))
            return Override(int(override_id or 0), verdict_id, decision, label, actor, reason, now, audit_id)

        return self._writer.submit(operation)

    def raise_alarm(self, kind: str, message: str, severity: str = "warning",
                    source: str | None = None, actor: str = SYSTEM_ACTOR) -> Future[int]:
        """Raise an alarm unless the same kind from the same source is already active."""
        def operation(conn: sqlite3.Connection) -> int:
            active = conn.execute(
                "SELECT id FROM alarms WHERE kind = ? AND COALESCE(source, '') = COALESCE(?, '')"
                " AND cleared_at IS NULL AND acknowledged_at IS NULL", (kind, source),
            ).fetchone()
            if active is not None:
                return int(active[0])
            alarm_id = int(conn.execute(
                "INSERT INTO alarms (kind, severity, message, source, raised_at) VALUES (?, ?, ?, ?, ?)",
                (kind, severity, message, source, utc_now()),
            ).lastrowid or 0)
            audit_id = append_audit(conn, actor, "alarm_raised", "alarm", alarm_id, None,
                                    {"kind": kind, "severity": severity, "message": message, "source": source})
            self._emit(conn, RecordEvent("alarm", "raised", (alarm_id,), audit_id))
            return alarm_id

        return self._writer.submit(operation)

    def acknowledge_alarm(self, alarm_id: int, actor: str) -> Future[Alarm]:
        def operation(conn: sqlite3.Connection) -> Alarm:
            before = _alarm(conn, alarm_id)
            if before.acknowledged_at is None:
                conn.execute("UPDATE alarms SET acknowledged_at = ?, acknowledged_by = ? WHERE id = ?",
                             (utc_now(), actor, alarm_id))
                after = _alarm(conn, alarm_id)
                audit_id = append_audit(conn, actor, "alarm_acknowledged", "alarm", alarm_id,
                                        {"acknowledged_at": None}, {"acknowledged_at": after.acknowledged_at,
                                                                    "acknowledged_by": actor, "kind": after.kind})
                self._emit(conn, RecordEvent("alarm", "acknowledged", (alarm_id,), audit_id))
                return after
            return before

        return self._writer.submit(operation)

    def clear_alarms(self, kind: str, source: str | None = None, actor: str = SYSTEM_ACTOR) -> Future[int]:
        """Clear the active alarms of a kind (and source) once their cause is gone; returns how many."""
        def operation(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id FROM alarms WHERE kind = ? AND COALESCE(source, '') = COALESCE(?, '')"
                                " AND cleared_at IS NULL", (kind, source)).fetchall()
            for row in rows:
                now = utc_now()
                conn.execute("UPDATE alarms SET cleared_at = ? WHERE id = ?", (now, row["id"]))
                audit_id = append_audit(conn, actor, "alarm_cleared", "alarm", row["id"], {"cleared_at": None},
                                        {"cleared_at": now, "kind": kind})
                self._emit(conn, RecordEvent("alarm", "cleared", (int(row["id"]),), audit_id))
            return len(rows)

        return self._writer.submit(operation)

    def audit(self, actor: str, action: str, entity: str, entity_id: str | int | None,
              before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
              details: dict[str, Any] | None = None) -> Future[int]:
        """A state change kept outside the database (recipe, line stop, model, config): its audit record."""
        def operation(conn: sqlite3.Connection) -> int:
            return append_audit(conn, actor, action, entity, entity_id, before, after, details)

        return self._writer.submit(operation)

    # -- reads ---------------------------------------------------------------------------------
    def verdict(self, verdict_id: int) -> Verdict | None:
        if not valid_id(verdict_id):
            return None
        row = self.reader().execute(VERDICT_VIEW + " WHERE v.id = ?", (verdict_id,)).fetchone()
        return None if row is None else from_row(Verdict, row)

    def verdicts_since(self, cursor: int, limit: int) -> list[Verdict]:
        """Verdicts with id > cursor in id order; ids grow in commit order, so paging never skips one."""
        if cursor > MAX_ID:
            return []
        rows = self.reader().execute(VERDICT_VIEW + " WHERE v.id > ? ORDER BY v.id LIMIT ?", (cursor, limit))
        return [from_row(Verdict, row) for row in rows]

    def batches(self, open_only: bool = False, limit: int = 100) -> list[Batch]:
        where = "WHERE closed_at IS NULL" if open_only else ""
        rows = self.reader().execute(f"SELECT * FROM batches {where} ORDER BY id DESC LIMIT ?", (limit,))
        return [from_row(Batch, row) for row in rows]

    def batch(self, batch_id: int) -> Batch | None:
        if not valid_id(batch_id):
            return None
        row = self.reader().execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return None if row is None else from_row(Batch, row)

    def alarms(self, active_only: bool = False, limit: int = 100) -> list[Alarm]:
        where = "WHERE acknowledged_at IS NULL AND cleared_at IS NULL" if active_only else ""
        rows = self.reader().execute(f"SELECT * FROM alarms {where} ORDER BY id DESC LIMIT ?", (limit,))
        return [from_row(Alarm, row) for row in rows]

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        """The newest audit records, newest first."""
        rows = self.reader().execute("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", (limit,))
        return [from_row(AuditEntry, row) for row in rows]

    def audit_since(self, cursor: int, limit: int) -> list[AuditEntry]:
        """Audit records with id > cursor, oldest first (a stable order for paging)."""
        if cursor > MAX_ID:
            return []
        rows = self.reader().execute("SELECT * FROM audit_log WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit))
        return [from_row(AuditEntry, row) for row in rows]

    def chain_heads(self) -> dict[str, tuple[int, str]]:
        conn = self.reader()
        return {"verdicts": head(conn, "verdicts"), "audit": head(conn, "audit")}

    def counts(self) -> dict[str, int]:
        conn = self.reader()
        return {name: int(conn.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])
                for name in ("batches", "parts", "verdicts", "overrides", "alarms", "audit_log")}


def _verdict_values(verdict_id: int, part_id: int, serial: str, batch_id: int | None, lot: str | None,
                    part: PartContext, v: NewVerdict, now: str, refers_to: int | None) -> list[Any]:
    """The verdict's chained fields in VERDICT_FIELDS order, typed exactly as SQLite gives them back."""
    return [
        verdict_id, part_id, serial, batch_id, lot, v.modality, v.model_name,
        None if v.model_version is None else int(v.model_version), v.label, _real(v.score), _real(v.threshold),
        v.decision, v.reason, _real(v.latency_ms), v.image_ref, v.heatmap_ref, part.source, part.station, now,
        to_json(v.details) if v.details else None, v.recipe, v.actuated, int(v.late), part.actor, refers_to,
    ]


def _missing(conn: sqlite3.Connection, verdict_id: int) -> str:
    """Why a verdict id names no row: never stored, or moved to an archive file (edge.store.archiving)."""
    archived_to = anchor(conn, "verdicts")[0]
    if 0 < verdict_id <= archived_to:
        return (f"verdict {verdict_id} is archived (verdicts up to {archived_to} were moved from the database to "
                f"archive files): it can no longer be changed")
    return f"verdict {verdict_id} does not exist"


def _real(value: float | None) -> float | None:
    return None if value is None else float(value)


def _batch_for(conn: sqlite3.Connection, part: PartContext) -> int | None:
    """The open batch of the part's lot at its station, else (no lot given) the station's open batch."""
    if part.lot:
        row = conn.execute("SELECT id FROM batches WHERE lot = ? AND station = ? AND closed_at IS NULL",
                           (part.lot, part.station)).fetchone()
    else:
        row = conn.execute("SELECT id FROM batches WHERE station = ? AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
                           (part.station,)).fetchone()
    return None if row is None else int(row[0])


def _part_for(conn: sqlite3.Connection, part: PartContext, serial: str, batch_id: int | None, decision: str,
              now: str) -> tuple[int, str | None]:
    """The part's row id and stored lot; a re-inspection finds the row of its first inspection (same
    serial in the same batch, or with no batch the same lot), a new part gets a row."""
    if batch_id is not None:
        row = conn.execute("SELECT id, lot FROM parts WHERE serial = ? AND batch_id = ?", (serial, batch_id)).fetchone()
    else:
        row = conn.execute("SELECT id, lot FROM parts WHERE serial = ? AND batch_id IS NULL"
                           " AND COALESCE(lot, '') = COALESCE(?, '')", (serial, part.lot)).fetchone()
    if row is None:
        part_id = conn.execute(
            "INSERT INTO parts (serial, batch_id, lot, station, source, created_at, decision, inspections,"
            " trigger_seq) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
            (serial, batch_id, part.lot, part.station, part.source, now, decision, part.trigger_seq),
        ).lastrowid
        return int(part_id or 0), part.lot
    conn.execute("UPDATE parts SET decision = ?, inspections = inspections + 1 WHERE id = ?", (decision, row[0]))
    return int(row[0]), row[1]


def _batch(conn: sqlite3.Connection, batch_id: int) -> Batch:
    row = conn.execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone() if valid_id(batch_id) else None
    if row is None:
        raise NotFoundError(f"batch {batch_id} does not exist")
    return from_row(Batch, row)


def _alarm(conn: sqlite3.Connection, alarm_id: int) -> Alarm:
    row = conn.execute("SELECT * FROM alarms WHERE id = ?", (alarm_id,)).fetchone() if valid_id(alarm_id) else None
    if row is None:
        raise NotFoundError(f"alarm {alarm_id} does not exist")
    return from_row(Alarm, row)


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}
