"""The store listener that keeps the image of a verdict an operator overrides or confirms: an OK image held
only in memory (``ImageArchive.hold``) is written to the path its verdict already names."""

from __future__ import annotations

import logging
import sqlite3

from edge.archive import ImageArchive
from edge.store import RecordEvent

log = logging.getLogger(__name__)


class KeepOverridden:
    """``store.add_listener(KeepOverridden(archive))``. The write is queued inside the override's
    transaction and done by the archive's writer thread (the override is not held up by it); should the
    transaction fail after that, the image is kept all the same: one file more, no record lost."""

    def __init__(self, archive: ImageArchive) -> None:
        self.archive = archive

    def __call__(self, conn: sqlite3.Connection, event: RecordEvent) -> None:
        if event.kind != "override" or not len(self.archive.recent):
            return
        row = conn.execute("SELECT v.image_ref FROM overrides o JOIN verdicts v ON v.id = o.verdict_id"
                           " WHERE o.id = ?", (event.ids[0],)).fetchone()
        if row is not None and row[0] and self.archive.keep(row[0]) is not None:
            log.info("kept the image %s of an overridden or confirmed verdict", row[0])
