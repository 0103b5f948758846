"""Database care: online backups with SQLite's backup API, checked copies, restore, the integrity check at start.

A backup is taken from a read snapshot (WAL: the verdict writer goes on meanwhile), written beside its target
as ``.partial``, checked with ``PRAGMA integrity_check``, fsync'd and renamed into place. A restore refuses while
a station runs on the data folder (``StationLock``: every running station holds it shared, a restore takes it
exclusively), checks the backup's integrity and hash chains first, keeps the replaced database aside and puts
the backup in place with one atomic rename."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from edge.durable import fsync_folder
from edge.store.chain import append_audit
from edge.store.verify import ChainReport, verify_database

LOCK_NAME = ".station.lock"


class BackupError(RuntimeError):
    """A backup or restore that did not happen; the message says why and what to do. Nothing was replaced."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    seconds: float
    integrity: str  # "ok"


@dataclass(frozen=True)
class RestoreResult:
    database: Path
    restored_from: Path
    replaced_kept_as: Path | None
    chains: list[ChainReport]


def integrity_problems(path: Path, quick: bool = False, limit: int = 20) -> list[str]:
    """What ``PRAGMA integrity_check`` (or the faster ``quick_check``) finds wrong in the database file at
    ``path``; empty when it is sound. A file that is not a database at all is one problem."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}({limit})").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [str(exc)]
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def backup_database(source: Path, target: Path) -> BackupResult:
    """A consistent, checked copy of the (live) database at ``source`` in the file ``target``."""
    started = time.perf_counter()
    if target.resolve() == source.resolve():
        raise BackupError(f"the backup target {target} is the database itself: name another file")
    if target.is_dir():
        raise BackupError(f"the backup target {target} is a folder: name a file in it")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            src.execute("PRAGMA query_only=ON")
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # one step: one read snapshot, so the copy is consistent; writers are not held
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
        problems = integrity_problems(partial)
        if problems:
            raise BackupError(f"the copy of {source} failed its integrity check ({'; '.join(problems[:3])}); the "
                              f"database itself may be damaged: run `edge-inspect audit verify`")
        _fsync(partial)
        os.replace(partial, target)
        fsync_folder(target.parent)
    except (sqlite3.Error, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup of {source} to {target} failed: {exc}") from exc
    except BackupError:
        partial.unlink(missing_ok=True)
        raise
    return BackupResult(target, target.stat().st_size, time.perf_counter() - started, "ok")


def scheduled_backup(source: Path, folder: Path, keep: int) -> BackupResult:
    """A backup named by the time in ``folder``; the oldest beyond ``keep`` are deleted."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = backup_database(source, folder / f"{source.stem}-{stamp}.db")
    for old in backups_in(folder, source.stem)[:-keep]:
        old.unlink(missing_ok=True)
    return result


def backups_in(folder: Path, stem: str) -> list[Path]:
    """The scheduled backups in ``folder``, oldest first (their names sort by time)."""
    return sorted(folder.glob(f"{stem}-*Z.db")) if folder.is_dir() else []


class StationLock:
    """A lock file in the data folder: shared by every running station, exclusive for a restore."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self, exclusive: bool) -> bool:
        """Take the lock without waiting; False when it is held the other way."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115  # held open while locked
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def restore_database(backup: Path, database: Path, actor: str) -> RestoreResult:
    """Replace ``database`` with the checked ``backup``; refused while a station runs on its folder."""
    if not backup.is_file():
        raise BackupError(f"no backup file at {backup}")
    lock = StationLock(database.parent)
    if not lock.acquire(exclusive=True):
        raise BackupError(f"a station is running on {database.parent}: stop it first (systemctl stop edge-inspect, "
                          f"or end `edge-inspect run`), then restore")
    try:
        problems = integrity_problems(backup)
        if problems:
            raise BackupError(f"the backup {backup} failed its integrity check ({'; '.join(problems[:3])}): "
                              f"nothing was replaced; choose another backup")
        try:
            chains = verify_database(backup)
        except sqlite3.Error as exc:
            raise BackupError(f"the backup {backup} cannot be read as a station database ({exc}): nothing was "
                              f"replaced") from exc
        broken = [r.finding.message for r in chains if r.finding is not None]
        if broken:
            raise BackupError(f"the backup {backup} holds a broken hash chain ({broken[0]}): nothing was replaced; "
                              f"choose another backup")
        incoming = database.with_name(database.name + ".restoring")
        backup_database(backup, incoming)
        aside = _set_aside(database)
        os.replace(incoming, database)
        fsync_folder(database.parent)
        _audit_restore(database, actor, backup, aside)
        return RestoreResult(database, backup, aside, chains)
    finally:
        lock.release()


def _set_aside(database: Path) -> Path | None:
    """Keep the database about to be replaced (with its WAL) under a name of its own; its path stays in place
    until the atomic rename over it."""
    if not database.exists():
        return None
    with contextlib.suppress(sqlite3.Error):  # fold the WAL in; a damaged file is kept as it is
        conn = sqlite3.connect(database)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = database.with_name(f"{database.name}.replaced-{stamp}")
    try:
        os.link(database, aside)
    except OSError:
        shutil.copy2(database, aside)
    for suffix in ("-wal", "-shm"):
        sidecar = database.with_name(database.name + suffix)
        if sidecar.exists():
            if suffix == "-wal":
                os.replace(sidecar, aside.with_name(aside.name + suffix))
            else:
                sidecar.unlink()
    return aside


def _audit_restore(database: Path, actor: str, backup: Path, aside: Path | None) -> None:
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        append_audit(conn, actor, "database_restored", "database", database.name,
                     None if aside is None else {"kept_as": str(aside)}, {"restored_from": str(backup)})
        conn.execute("COMMIT")
    except sqlite3.OperationalError:  # a backup from before the audit chain: the service migrates it at start
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
