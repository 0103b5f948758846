"""The messages the plant receives: one JSON object per record, built inside the record's transaction.

Every message carries ``schema``, ``kind``, ``event``, ``station`` and ``idempotency_key``:
``<station>:verdict:<verdict id>:<verdict chain hash>`` for a stored verdict, and
``<station>:audit:<audit id>:<audit chain hash>`` for every other change (each one writes a chained audit
record in its transaction). A consumer that keeps the keys it has seen drops redelivered duplicates."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from edge.quality.summary import batch_summary, summary_record
from edge.store import RecordEvent
from edge.store.store import VERDICT_VIEW

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    kind: str  # the sub-topic: verdicts, batches, alarms, overrides
    idempotency_key: str
    payload: dict[str, Any]

    def encode(self) -> str:
        return json.dumps(self.payload, separators=(",", ":"), default=str)


def verdict_key(station_id: str, verdict_id: int, chain_hash: str | None) -> str:
    return f"{station_id}:verdict:{verdict_id}:{chain_hash}"


def audit_key(station_id: str, audit_id: int, chain_hash: str | None) -> str:
    return f"{station_id}:audit:{audit_id}:{chain_hash}"


def messages_for(conn: sqlite3.Connection, station_id: str, event: RecordEvent) -> list[Message]:
    """The messages one store change owes the plant (read through the writer's open transaction)."""
    if event.kind == "verdicts":
        return [_verdict_message(station_id, row, "stored", verdict_key(station_id, row["id"], row["hash"]))
                for row in _verdict_rows(conn, event.ids)]
    key = _event_key(conn, station_id, event)
    if event.kind == "late_answer":
        return [_verdict_message(station_id, row, "late", key) for row in _verdict_rows(conn, event.ids)]
    if event.kind == "batch":
        row = conn.execute("SELECT * FROM batches WHERE id = ?", (event.ids[0],)).fetchone()
        if row is None:
            return []
        message = _record_message("batches", "batch", event.action, station_id, key, dict(row))
        if event.action == "closed":
            message.payload["summary"] = _batch_summary(conn, event.ids[0])
        return [message]
    if event.kind == "alarm":
        row = conn.execute("SELECT * FROM alarms WHERE id = ?", (event.ids[0],)).fetchone()
        return [_record_message("alarms", "alarm", event.action, station_id, key, dict(row))] if row else []
    if event.kind == "override":
        row = conn.execute(
            "SELECT o.*, v.hash AS verdict_hash, p.serial, p.batch_id, COALESCE(b.lot, p.lot) AS lot,"
            " v.decision AS model_decision, v.label AS model_label, v.model_name, v.model_version"
            " FROM overrides o JOIN verdicts v ON v.id = o.verdict_id JOIN parts p ON p.id = v.part_id"
            " LEFT JOIN batches b ON b.id = p.batch_id WHERE o.id = ?", (event.ids[0],)).fetchone()
        return [_record_message("overrides", "override", event.action, station_id, key, dict(row))] if row else []
    return []


def _batch_summary(conn: sqlite3.Connection, batch_id: int) -> dict[str, Any] | None:
    """The closed batch's figures, as GET /api/v1/batches/{id}/summary answers them (edge.quality keeps them
    current in this same transaction: its listener is registered first). A failure here must not undo the
    batch's closing (a listener that raises rolls the change back): the message then goes without them."""
    try:
        return summary_record(batch_summary(conn, batch_id))
    except Exception:
        log.exception("batch %d: summary not included in the upstream message", batch_id)
        return None


def _verdict_rows(conn: sqlite3.Connection, ids: tuple[int, ...]) -> list[dict[str, Any]]:
    """The verdicts as the pull API shows them, with the chain's previous hash (a consumer finds gaps with it)."""
    marks = ", ".join("?" * len(ids))
    rows = [dict(r) for r in conn.execute(f"{VERDICT_VIEW} WHERE v.id IN ({marks}) ORDER BY v.id", ids)]
    previous = dict(conn.execute(f"SELECT id, prev_hash FROM verdicts WHERE id IN ({marks})", ids).fetchall())
    for row in rows:
        row["prev_hash"] = previous.get(row["id"])
    return rows


def _event_key(conn: sqlite3.Connection, station_id: str, event: RecordEvent) -> str:
    if event.audit_id is not None:
        row = conn.execute("SELECT hash FROM audit_log WHERE id = ?", (event.audit_id,)).fetchone()
        if row is not None:
            return audit_key(station_id, event.audit_id, row[0])
    # Every change the store makes today is audited; should one not be, its record and action still name it once.
    return f"{station_id}:{event.kind}:{'-'.join(map(str, event.ids))}:{event.action}"


def _verdict_message(station_id: str, values: dict[str, Any], event: str, key: str) -> Message:
    recorded_station = values.pop("station")
    details = values.get("details")
    if isinstance(details, str):
        values["details"] = json.loads(details)
    values["late"] = bool(values["late"])
    payload = {"schema": SCHEMA_VERSION, "kind": "verdict", "event": event, "station": station_id,
               "idempotency_key": key, **values}
    if recorded_station != station_id:
        payload["recorded_station"] = recorded_station
    return Message("verdicts", key, payload)


def _record_message(topic: str, kind: str, event: str, station_id: str, key: str, values: dict[str, Any]) -> Message:
    payload = {"schema": SCHEMA_VERSION, "kind": kind, "event": event, "station": station_id,
               "idempotency_key": key, **values}
    if "station" in values and values["station"] != station_id:
        payload["station"] = station_id
        payload["recorded_station"] = values["station"]
    return Message(topic, key, payload)
