"""Walk the hash chains and name the first record that was altered, inserted, deleted or reordered."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge.store.chain import AUDIT_FIELDS, VERDICT_FIELDS, ChainName, anchor, head, record_hash

Problem = Literal["altered", "inserted", "deleted", "reordered", "head_mismatch"]

_SELECT: dict[ChainName, str] = {
    "verdicts": "SELECT {fields}, v.prev_hash, v.hash FROM verdicts v JOIN parts p ON p.id = v.part_id".format(
        fields=", ".join(f"p.{c}" if c in ("serial", "batch_id", "lot") else f"v.{c}" for c in VERDICT_FIELDS)),
    "audit": f"SELECT {', '.join(AUDIT_FIELDS)}, prev_hash, hash FROM audit_log",
}
CHAIN_SELECT = _SELECT  # each chain's records: the hashed fields in order, then prev_hash and hash
_TABLE: dict[ChainName, str] = {"verdicts": "verdicts", "audit": "audit_log"}
_ALIAS: dict[ChainName, str] = {"verdicts": "v.", "audit": ""}


@dataclass(frozen=True)
class Finding:
    chain: ChainName
    record_id: int | None
    problem: Problem
    message: str


@dataclass(frozen=True)
class ChainReport:
    chain: ChainName
    records: int
    head_id: int
    head_hash: str
    finding: Finding | None
    anchor_id: int = 0  # the last record moved to archive files: the live chain starts after it

    @property
    def intact(self) -> bool:
        return self.finding is None


@dataclass(frozen=True)
class _Row:
    id: int
    values: tuple[Any, ...]
    prev_hash: str | None
    hash: str | None

    @property
    def self_consistent(self) -> bool:
        return self.prev_hash is not None and record_hash(self.prev_hash, self.values) == self.hash


def verify_chains(conn: sqlite3.Connection, progress: Callable[[int], None] | None = None) -> list[ChainReport]:
    """Both chains, verdicts first; ``progress`` is called with the number of records checked so far."""
    return [verify_chain(conn, chain, progress) for chain in ("verdicts", "audit")]


PARALLEL_FROM = 200_000  # records; below, starting processes costs more than it saves


def verify_database(path: Path, workers: int | None = None) -> list[ChainReport]:
    """Both chains of the database file at ``path``. A long chain is first checked as id ranges in parallel
    processes (each row's hash, and each range's first link to the previous range's last hash); only if a
    range finds a problem is the chain walked in one piece to name the first bad record."""
    workers = workers or min(4, os.cpu_count() or 1)
    conn = _readonly(path)
    try:
        reports = []
        for chain in ("verdicts", "audit"):
            quick = _parallel_check(path, conn, chain, workers) if workers > 1 else None
            reports.append(quick if quick is not None else verify_chain(conn, chain))
        return reports
    finally:
        conn.close()


def _readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@dataclass(frozen=True)
class _Range:
    count: int
    first_prev: str | None  # prev_hash of the range's first row
    last_id: int
    last_hash: str | None
    intact: bool  # every row's hash matches its content, and links to the row before it within the range


def _check_range(path: Path, chain: ChainName, after_id: int, up_to_id: int) -> _Range:
    conn = _readonly(path)
    try:
        cursor = conn.execute(_SELECT[chain] + f" WHERE {_ALIAS[chain]}id > ? AND {_ALIAS[chain]}id <= ?"
                              f" ORDER BY {_ALIAS[chain]}id", (after_id, up_to_id))
        count, first_prev, expected, last_id = 0, None, None, after_id
        for *values, prev_hash, stored in cursor:
            if count == 0:
                first_prev, expected = prev_hash, prev_hash
            if prev_hash != expected or prev_hash is None or record_hash(prev_hash, values) != stored:
                return _Range(count, first_prev, last_id, expected, False)
            expected, last_id = stored, values[0]
            count += 1
        return _Range(count, first_prev, last_id, expected, True)
    finally:
        conn.close()


def _parallel_check(path: Path, conn: sqlite3.Connection, chain: ChainName, workers: int) -> ChainReport | None:
    """The report of an intact chain, or None when the chain is short or a range found a problem."""
    table = _TABLE[chain]
    low, high, rows = conn.execute(f"SELECT MIN(id), MAX(id), COUNT(*) FROM {table}").fetchone()
    if rows < PARALLEL_FROM:
        return None
    bounds = [low - 1 + (high - low + 1) * i // workers for i in range(workers)] + [high]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        ranges = list(pool.map(_check_range, [path] * workers, [chain] * workers, bounds[:-1], bounds[1:]))
    anchor_id, expected = anchor(conn, chain)
    count = 0
    for part in ranges:
        if not part.intact or (part.count and part.first_prev != expected):
            return None
        if part.count:
            expected, count = part.last_hash or expected, count + part.count
    head_id, head_hash = head(conn, chain)
    if ranges[-1].last_id != head_id or expected != head_hash:
        return None  # the walk in one piece names what is wrong with the head
    return ChainReport(chain, count, head_id, head_hash, None, anchor_id)


def verify_chain(conn: sqlite3.Connection, chain: ChainName,
                 progress: Callable[[int], None] | None = None) -> ChainReport:
    head_id, head_hash = head(conn, chain)
    anchor_id, expected = anchor(conn, chain)  # (0, GENESIS) unless records were archived
    last_id, before_last, count = anchor_id, 0, 0
    cursor = conn.execute(_SELECT[chain] + f" ORDER BY {_ALIAS[chain]}id")
    cursor.row_factory = None  # plain tuples: the walk is the hot loop
    for raw in cursor:
        *values, prev_hash, stored = raw
        if prev_hash != expected or record_hash(prev_hash, values) != stored:
            row = _Row(values[0], tuple(values), prev_hash, stored)
            broken = _diagnose(conn, chain, last_id, expected, row, head_id, before_last, anchor_id)
            return ChainReport(chain, count, head_id, head_hash, broken, anchor_id)
        expected, last_id, before_last = stored, values[0], last_id
        count += 1
        if progress is not None and count % 100_000 == 0:
            progress(count)
    finding: Finding | None = None
    if last_id < head_id:
        finding = Finding(chain, last_id + 1, "deleted",
                          f"{chain} records {last_id + 1}..{head_id} at the end of the chain are missing (deleted): "
                          f"the chain head names record {head_id}")
    elif last_id > head_id:
        finding = Finding(chain, head_id + 1, "inserted",
                          f"{chain} records {head_id + 1}..{last_id} were inserted past the chain head (record "
                          f"{head_id} is the last one the station chained)")
    elif expected != head_hash:
        finding = Finding(chain, last_id, "head_mismatch",
                          f"the {chain} chain head (record {head_id}) does not match its last record {last_id}")
    return ChainReport(chain, count, head_id, head_hash, finding, anchor_id)


def _diagnose(conn: sqlite3.Connection, chain: ChainName, good_id: int, good_hash: str, row: _Row,
              head_id: int, before_good_id: int, anchor_id: int = 0) -> Finding:
    """Why ``row`` breaks the chain after the last record that linked (``good_id``, ``good_hash``;
    ``before_good_id`` the one before that; ``anchor_id`` the last archived record)."""
    where = f"{chain} record {row.id}"
    if good_id and good_id == anchor_id:
        after = f"the last archived record {good_id}"
    else:
        after = f"record {good_id}" if good_id else "the start of the chain"
    if row.id <= anchor_id:
        return Finding(chain, row.id, "inserted", f"{where} lies in the archived range (records up to {anchor_id} "
                                                  f"were moved to archive files) but is still in the database")
    if row.id > head_id:
        return Finding(chain, row.id, "inserted", f"{where} was inserted: it lies past the chain head "
                                                  f"(record {head_id} is the last one chained)")
    table = _TABLE[chain]
    if row.prev_hash is not None and row.prev_hash != good_hash:
        owner = conn.execute(f"SELECT id FROM {table} WHERE hash = ? AND id != ?",
                             (row.prev_hash, good_id)).fetchone()
        if owner is not None and good_id and owner[0] == before_good_id:
            return Finding(chain, good_id, "inserted", f"{chain} record {good_id} was inserted: record {row.id} "
                                                       f"follows record {before_good_id} in the chain")
        if owner is not None:
            return Finding(chain, row.id, "reordered", f"{where} is out of order: in the chain it follows record "
                                                       f"{owner[0]}, not {after}")
        if row.id > good_id + 1 and row.self_consistent:
            return Finding(chain, good_id + 1, "deleted", f"{chain} records {good_id + 1}..{row.id - 1} are missing "
                                                          f"(deleted): record {row.id} follows a record that is gone")
    following = conn.execute(f"SELECT prev_hash FROM {table} WHERE id > ? ORDER BY id LIMIT 1",
                             (row.id,)).fetchone()
    if following is not None and following[0] == good_hash and row.hash != good_hash:
        return Finding(chain, row.id, "inserted", f"{where} was inserted: it is not in the chain (the next record "
                                                  f"follows {after})")
    if not row.self_consistent:
        return Finding(chain, row.id, "altered", f"{where} was altered: its content no longer matches its hash")
    return Finding(chain, row.id, "deleted", f"{where} does not follow {after}: a record between them was deleted, "
                                             f"or {after} was replaced")
