"""Verdict rows older than a configured age, moved to compressed archive files without breaking the chain.

One file per run of at most ``max_records`` verdicts, ``verdicts-<first id>-<last id>.ndjson.gz``: one JSON
object per verdict (its chained fields by name, then ``prev_hash`` and ``hash``), fsync'd, with a manifest
beside it (``.manifest.json``: id range, counts, the chain hash before the first record and of the last one,
first and last commit time, the file's SHA-256). The database lists every file in ``archives`` and keeps
the last archived record in ``chain_anchors``: the live chain starts from its hash, so ``audit verify``
still passes, and ``verify_archives`` checks the files themselves.

The rows are removed in small transactions through the store's writer, each advancing the anchor, so the
verdict writer is never held for long and a crash between two leaves a consistent chain (the next run
finishes the removal). Overrides, late answers and workbench samples outlive the verdicts they refer to."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge.durable import fsync_folder, write_durably
from edge.store.chain import GENESIS, VERDICT_FIELDS, anchor, append_audit, record_hash, utc_now
from edge.store.store import ConflictError, VerdictStore
from edge.store.verify import CHAIN_SELECT

SYSTEM = "system"
MANIFEST_SUFFIX = ".manifest.json"
_ANCHOR_SQL = ("INSERT INTO chain_anchors (chain, last_id, hash) VALUES ('verdicts', ?, ?) ON CONFLICT(chain)"
               " DO UPDATE SET last_id = excluded.last_id, hash = excluded.hash")


class ArchiveError(RuntimeError):
    """Verdicts cannot be archived (a broken chain, a folder that cannot be written); nothing was removed."""


@dataclass(frozen=True)
class Manifest:
    file: str  # the archive's name, in the archive folder
    chain: str
    first_id: int
    last_id: int
    records: int
    prev_hash: str  # the chain hash before the first record
    last_hash: str
    first_at: str
    last_at: str
    sha256: str
    created_at: str


@dataclass
class ArchiveRun:
    files: list[Manifest]
    records: int = 0
    removed: int = 0
    longest_removal_ms: float = 0.0  # the longest single removal transaction (the writer's pause)
    removal_transactions: int = 0


def archived_through(conn: sqlite3.Connection) -> int:
    """The last verdict id moved to archive files (0: none)."""
    return anchor(conn, "verdicts")[0]


def delivered_limit(conn: sqlite3.Connection) -> int | None:
    """The highest verdict id the upstream link has delivered everywhere (None: nothing is waiting)."""
    row = conn.execute("SELECT MIN(json_extract(payload, '$.id')) FROM outbox WHERE topic = 'verdicts'").fetchone()
    return None if row is None or row[0] is None else int(row[0]) - 1


def archive_verdicts(store: VerdictStore, folder: Path, older_than: str, up_to_id: int | None = None,
                     max_records: int = 100_000, removal_batch: int = 2000) -> ArchiveRun:
    """Archive every verdict committed before ``older_than`` (UTC text, as the store writes times) and with
    id <= ``up_to_id`` (the delivered limit), then remove it from the database."""
    folder.mkdir(parents=True, exist_ok=True)
    run = ArchiveRun([])
    _finish_removals(store, run, removal_batch)
    reader = store.reader()
    while True:
        anchor_id, anchor_hash = anchor(reader, "verdicts")
        row = reader.execute("SELECT id FROM verdicts WHERE created_at < ? ORDER BY created_at DESC, id DESC LIMIT 1",
                             (older_than,)).fetchone()
        upper = 0 if row is None else int(row[0])
        if up_to_id is not None:
            upper = min(upper, up_to_id)
        if upper <= anchor_id:
            return run
        manifest = _write_file(reader, folder, anchor_id, anchor_hash, upper, max_records)
        store.submit(functools.partial(_register, manifest=manifest, anchor_id=anchor_id)).result()
        run.files.append(manifest)
        run.records += manifest.records
        _remove(store, manifest.last_id, run, removal_batch)


def _write_file(conn: sqlite3.Connection, folder: Path, anchor_id: int, anchor_hash: str, upper: int,
                max_records: int) -> Manifest:
    """Write the verdicts after the anchor (up to ``upper``, ``max_records`` at most) and their manifest."""
    cursor = conn.cursor()
    cursor.row_factory = None
    cursor.execute("BEGIN")  # one snapshot for the whole file
    try:
        rows = cursor.execute(CHAIN_SELECT["verdicts"] + " WHERE v.id > ? AND v.id <= ? ORDER BY v.id LIMIT ?",
                              (anchor_id, upper, max_records)).fetchall()
    finally:
        cursor.execute("COMMIT")
    if not rows:
        raise ArchiveError(f"no verdicts found after id {anchor_id} up to {upper}")
    expected = anchor_hash
    for *values, prev_hash, stored in rows:
        if prev_hash != expected or record_hash(prev_hash, values) != stored:
            raise ArchiveError(f"verdict {values[0]} does not continue the chain: nothing was archived; run "
                               f"`edge-inspect audit verify` to see what is wrong")
        expected = stored
    first_id, last_id = int(rows[0][0]), int(rows[-1][0])
    name = f"verdicts-{first_id:012d}-{last_id:012d}.ndjson.gz"
    at = VERDICT_FIELDS.index("created_at")
    target = folder / name
    temporary = folder / f"{name}.tmp"
    with open(temporary, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as packed:
            for *values, prev_hash, stored in rows:
                record = dict(zip(VERDICT_FIELDS, values, strict=True))
                record["prev_hash"], record["hash"] = prev_hash, stored
                packed.write(_LINE.encode(record).encode() + b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    digest = _sha256(temporary)
    os.replace(temporary, target)
    manifest = Manifest(name, "verdicts", first_id, last_id, len(rows), anchor_hash, str(rows[-1][-1]),
                        str(rows[0][at]), str(rows[-1][at]), digest, utc_now())
    write_durably(folder / (name + MANIFEST_SUFFIX), json.dumps(asdict(manifest), indent=2).encode(), False)
    fsync_folder(folder)
    return manifest


_LINE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def _register(conn: sqlite3.Connection, manifest: Manifest, anchor_id: int) -> None:
    """List the file in the database and audit it, in the writer's transaction (nothing is removed yet)."""
    if anchor(conn, "verdicts")[0] != anchor_id:
        raise ConflictError("another archive run moved the anchor meanwhile")
    values = asdict(manifest)
    archive_id = conn.execute(
        "INSERT INTO archives (chain, file, first_id, last_id, records, prev_hash, last_hash, sha256, first_at,"
        " last_at, created_at) VALUES (:chain, :file, :first_id, :last_id, :records, :prev_hash, :last_hash,"
        " :sha256, :first_at, :last_at, :created_at)", values).lastrowid
    append_audit(conn, SYSTEM, "verdicts_archived", "archive", archive_id, None,
                 {k: values[k] for k in ("file", "first_id", "last_id", "records", "prev_hash", "last_hash", "sha256")})


def _finish_removals(store: VerdictStore, run: ArchiveRun, batch: int) -> None:
    """Remove what a run that stopped half-way (a crash, a stop) had archived but not yet removed."""
    reader = store.reader()
    anchor_id = archived_through(reader)
    row = reader.execute("SELECT MAX(last_id) FROM archives WHERE chain = 'verdicts'").fetchone()
    if row is not None and row[0] is not None and int(row[0]) > anchor_id:
        _remove(store, int(row[0]), run, batch)


def _remove(store: VerdictStore, last_id: int, run: ArchiveRun, batch: int) -> None:
    """Delete archived verdicts up to ``last_id``, ``batch`` rows per transaction, moving the anchor with them."""
    def remove_some(conn: sqlite3.Connection) -> int:
        started = time.perf_counter()
        anchor_id, _ = anchor(conn, "verdicts")
        rows = conn.execute("SELECT id, hash FROM verdicts WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                            (anchor_id, last_id, batch)).fetchall()
        if not rows:
            return 0
        end_id, end_hash = int(rows[-1][0]), str(rows[-1][1])
        conn.execute("DELETE FROM verdicts WHERE id > ? AND id <= ?", (anchor_id, end_id))
        conn.execute(_ANCHOR_SQL, (end_id, end_hash))
        run.longest_removal_ms = max(run.longest_removal_ms, (time.perf_counter() - started) * 1000.0)
        return len(rows)

    while True:
        removed = store.submit(remove_some).result()
        if not removed:
            return
        run.removed += removed
        run.removal_transactions += 1


# -- verifying the files --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArchiveFinding:
    file: str | None
    record_id: int | None
    problem: str  # missing, altered_file, altered, broken_link, count, anchor
    message: str


@dataclass(frozen=True)
class ArchiveReport:
    files: int
    records: int
    finding: ArchiveFinding | None

    @property
    def intact(self) -> bool:
        return self.finding is None


def verify_archives(conn: sqlite3.Connection, folder: Path) -> ArchiveReport:
    """Check every archive file the database lists: present, its SHA-256 as recorded, every record's hash,
    the links from file to file (the first from the start of the chain), and the live chain's anchor."""
    try:
        listed = conn.execute("SELECT file, first_id, last_id, records, prev_hash, last_hash, sha256 FROM archives"
                              " WHERE chain = 'verdicts' ORDER BY first_id").fetchall()
    except sqlite3.OperationalError:
        listed = []  # a schema before archives: nothing archived
    anchor_id, anchor_hash = anchor(conn, "verdicts")
    expected, next_id, records, anchor_seen = GENESIS, 1, 0, anchor_id == 0
    for name, first_id, last_id, count, prev_hash, last_hash, digest in listed:
        path = folder / name
        if not path.is_file():
            return ArchiveReport(len(listed), records, ArchiveFinding(name, first_id, "missing",
                                 f"archive file {path} (verdicts {first_id}..{last_id}) is missing"))
        if _sha256(path) != digest:
            return ArchiveReport(len(listed), records, ArchiveFinding(
                name, None, "altered_file", f"archive file {path} was altered: its SHA-256 is not the one recorded "
                                            f"when it was written (verdicts {first_id}..{last_id})"))
        if prev_hash != expected or first_id != next_id:
            return ArchiveReport(len(listed), records, ArchiveFinding(
                name, first_id, "broken_link", f"archive file {path} does not follow the one before it (expected "
                                               f"to start at verdict {next_id})"))
        seen = 0
        try:
            for record in _records(path):
                values = [record.get(field) for field in VERDICT_FIELDS]
                record_id = record.get("id")
                if record.get("prev_hash") != expected or record_hash(expected, values) != record.get("hash"):
                    return ArchiveReport(len(listed), records, ArchiveFinding(
                        name, record_id, "altered", f"verdict {record_id} in archive file {path} was altered or "
                                                    f"does not follow the record before it"))
                expected = str(record["hash"])
                seen += 1
                if record_id == anchor_id:
                    anchor_seen = expected == anchor_hash
        except (OSError, EOFError, ValueError) as exc:
            return ArchiveReport(len(listed), records, ArchiveFinding(name, None, "altered_file",
                                                                      f"archive file {path} cannot be read: {exc}"))
        if seen != count or expected != last_hash:
            return ArchiveReport(len(listed), records, ArchiveFinding(
                name, last_id, "count", f"archive file {path} holds {seen} records ending in another hash than the "
                                        f"{count} recorded (verdicts {first_id}..{last_id})"))
        records += seen
        next_id = last_id + 1
    if not anchor_seen:
        return ArchiveReport(len(listed), records, ArchiveFinding(
            None, anchor_id, "anchor", f"the live chain starts after verdict {anchor_id}, but no archive file holds "
                                       f"that record with the anchor's hash"))
    return ArchiveReport(len(listed), records, None)


def read_manifest(path: Path) -> Manifest:
    return Manifest(**json.loads(path.read_text()))


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rb") as lines:
        for line in lines:
            yield json.loads(line)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
