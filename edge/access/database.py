"""The station database for commands run beside the service (``edge-inspect users|tokens``)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import sqlite_utils

from edge.store.schema import connect, migrate

T = TypeVar("T")


@contextlib.contextmanager
def open_database(path: Path) -> Iterator[sqlite3.Connection]:
    """The database at ``path``, created and migrated if needed; closed on exit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    try:
        migrate(sqlite_utils.Database(conn), path)
        yield conn
    finally:
        conn.close()


def in_transaction(conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``operation`` in a ``BEGIN IMMEDIATE`` transaction (the service's writer waits for it):
    committed when it returns, rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = operation(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
