"""The hash chains that make the record tamper-evident.

Two chains, each in id order: ``verdicts`` (every judged part's verdict rows) and ``audit`` (every
state change: who, when, what, before and after). Each row stores ``prev_hash`` (the previous row's
``hash``, or GENESIS for the first) and ``hash`` = SHA-256 of its canonical content. The table
``chain_heads`` holds each chain's last id and hash, updated in the same transaction, so a deleted
tail is found as well as an altered, inserted, deleted or reordered row.

Every append runs inside the caller's transaction (the store's writer, or a CLI command's
``BEGIN IMMEDIATE``): the previous hash is read from the database under the write lock, so two
processes appending to one database still form one chain.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

ChainName = Literal["verdicts", "audit"]
GENESIS = "0" * 64

# The columns each chain hashes, in this order. Changing a list breaks every stored chain.
VERDICT_FIELDS = ("id", "part_id", "serial", "batch_id", "lot", "modality", "model_name", "model_version", "label",
                  "score", "threshold", "decision", "reason", "latency_ms", "image_ref", "heatmap_ref", "source",
                  "station", "created_at", "details", "recipe", "actuated", "late", "actor", "refers_to")
AUDIT_FIELDS = ("id", "at", "actor", "action", "entity", "entity_id", "details", "before", "after")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


_CANONICAL = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True)  # built once: it is hot


def canonical(values: Sequence[Any]) -> bytes:
    """One byte string per record: a compact JSON array (floats as Python writes them, repeatably)."""
    return _CANONICAL.encode(list(values)).encode()


def record_hash(prev_hash: str, values: Sequence[Any]) -> str:
    """SHA-256 of the previous record's hash, a newline and the record's canonical content."""
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical(values)).hexdigest()


def to_json(value: Any) -> str | None:
    """The stored text of a JSON column (sorted keys, so the same value always hashes the same)."""
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def head(conn: sqlite3.Connection, chain: ChainName) -> tuple[int, str]:
    """(last id, last hash) of a chain; (0, GENESIS) when empty."""
    row = conn.execute("SELECT last_id, hash FROM chain_heads WHERE chain = ?", (chain,)).fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def anchor(conn: sqlite3.Connection, chain: ChainName) -> tuple[int, str]:
    """(id, hash) of a chain's last archived record, where the live chain starts; (0, GENESIS) when none
    was archived (or the database predates archives)."""
    try:
        row = conn.execute("SELECT last_id, hash FROM chain_anchors WHERE chain = ?", (chain,)).fetchone()
    except sqlite3.OperationalError:  # no such table: schema before version 8
        return 0, GENESIS
    return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))


def advance(conn: sqlite3.Connection, chain: ChainName, last_id: int, last_hash: str) -> None:
    conn.execute("INSERT INTO chain_heads (chain, last_id, hash) VALUES (?, ?, ?) ON CONFLICT(chain) DO UPDATE"
                 " SET last_id = excluded.last_id, hash = excluded.hash", (chain, last_id, last_hash))


def commit_time(conn: sqlite3.Connection, table: str, column: str) -> str:
    """Now, but never earlier than the table's last record (a clock stepped back keeps id order = time order)."""
    now = utc_now()
    row = conn.execute(f"SELECT {column} FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
    return row[0] if row is not None and row[0] > now else now


def append_audit(conn: sqlite3.Connection, actor: str, action: str, entity: str, entity_id: str | int | None,
                 before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
                 details: dict[str, Any] | None = None) -> int:
    """Write one chained audit record inside the caller's open transaction; returns its id.

    ``actor`` is the authenticated identity (``user:NAME``, ``token:NAME``, ``cli:OSUSER``, ``system``,
    ``anonymous@loopback``); ``before``/``after`` the values the change replaced and set."""
    at = commit_time(conn, "audit_log", "at")
    _, prev = head(conn, "audit")
    record_id = next_id(conn, "audit_log")
    values = [record_id, at, actor, action, entity, None if entity_id is None else str(entity_id),
              to_json(details), to_json(before), to_json(after)]
    digest = record_hash(prev, values)
    conn.execute("INSERT INTO audit_log (id, at, actor, action, entity, entity_id, details, before, after, prev_hash,"
                 " hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, prev, digest))
    advance(conn, "audit", record_id, digest)
    return record_id


def next_id(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0])
