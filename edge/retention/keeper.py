"""The station's housekeeping thread: image retention, the "images not kept" alarm, verdict archiving and
scheduled backups, each step on its own so that one failing never stops the others (nor inspection)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime

from edge.archive import ImageArchive
from edge.config import StationConfig
from edge.metrics import StationMetrics
from edge.retention.verdicts import archive_due
from edge.store import VerdictStore
from edge.store.archiving import ArchiveError
from edge.store.backup import BackupError, backups_in, scheduled_backup

log = logging.getLogger(__name__)

ALARM_KIND = "images_not_kept"
ALARM_SOURCE = "storage"
_ARCHIVE_EVERY_S = 3600.0  # verdict rows age by days: once an hour is enough


class StorageKeeper:
    def __init__(self, config: StationConfig, store: VerdictStore, archive: ImageArchive,
                 metrics: StationMetrics | None = None) -> None:
        self.config = config
        self.store = store
        self.archive = archive
        self.metrics = metrics
        self.alarm_active = store.reader().execute(  # one a previous run left raised is cleared when space returns
            "SELECT 1 FROM alarms WHERE kind = ? AND source = ? AND cleared_at IS NULL", (ALARM_KIND, ALARM_SOURCE)
        ).fetchone() is not None
        self._skipped_seen = archive.skipped_low_disk
        self._archived_at = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.run_once()
            self._stopping.wait(self.config.storage.housekeeping_interval_s)

    def run_once(self) -> None:
        self.keep_images()
        if time.monotonic() - self._archived_at >= _ARCHIVE_EVERY_S or self._archived_at == 0.0:
            self._archived_at = time.monotonic()
            self.archive_verdicts()
        self.backup_if_due()

    # -- images ----------------------------------------------------------------------------------
    def keep_images(self) -> None:
        try:
            self.archive.enforce_retention()
        except (OSError, sqlite3.Error) as exc:
            log.error("image retention failed: %s", exc)
        skipped = self.archive.skipped_low_disk - self._skipped_seen
        self._skipped_seen = self.archive.skipped_low_disk
        try:
            low = self.archive.below_floor()
        except OSError as exc:
            log.error("cannot read the free space of %s: %s", self.config.data_dir, exc)
            return
        if self.metrics is not None:
            self.metrics.data_free.set(self.archive.free_bytes())
        try:
            if (skipped or low) and not self.alarm_active:
                floor = self.config.storage.min_free_mb
                self.store.raise_alarm(ALARM_KIND, f"free space on {self.config.data_dir} is below the floor of "
                                       f"{floor:.0f} MB (storage.min_free_mb) with no old image left to delete: "
                                       f"new images are not kept ({skipped} skipped); verdicts are still stored. "
                                       f"Free space on that disk or lower the floor.", "warning",
                                       ALARM_SOURCE).result()
                self.alarm_active = True
            elif not skipped and not low and self.alarm_active:
                self.store.clear_alarms(ALARM_KIND, ALARM_SOURCE).result()
                self.alarm_active = False
        except Exception as exc:  # the store stopping: tried again next round
            log.error("cannot record the disk alarm: %s", exc)

    # -- verdict rows ------------------------------------------------------------------------------
    def archive_verdicts(self) -> None:
        days = self.config.storage.archive_after_days
        if days <= 0:
            return
        try:
            run = archive_due(self.config, days, self.store)
        except (ArchiveError, sqlite3.Error, OSError, RuntimeError, ValueError) as exc:
            log.error("archiving verdict rows failed (nothing was removed that is not archived): %s", exc)
            return
        if run.records:
            log.info("archived %d verdicts in %d file(s); longest removal transaction %.1f ms", run.records,
                     len(run.files), run.longest_removal_ms)

    # -- backups -----------------------------------------------------------------------------------
    def backup_if_due(self) -> None:
        hours = self.config.storage.backup_interval_hours
        if hours <= 0:
            return
        folder = self.config.backup_dir
        path = self.config.database_path
        existing = backups_in(folder, path.stem)
        if existing and time.time() - existing[-1].stat().st_mtime < hours * 3600:
            return
        try:
            result = scheduled_backup(path, folder, self.config.storage.backup_keep)
        except BackupError as exc:
            log.error("scheduled backup failed: %s", exc)
            self.store.raise_alarm("backup_failed", str(exc), "warning", ALARM_SOURCE)
            return
        log.info("backed up the database to %s (%d bytes, %.1f s, %s)", result.path, result.size_bytes,
                 result.seconds, datetime.now(UTC).isoformat(timespec="seconds"))
