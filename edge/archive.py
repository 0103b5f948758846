"""Keeps judged images and heat maps on disk, referenced from verdict rows by relative path, by rule.

What is kept (``policy``): none, all, or ``ng``: every NG and INVALID image, a random share of OK ones
(``ok_sample_rate``), and every other OK image only in memory (``RecentImages``, bounded by ``recent_ok_mb``):
its reference is reserved with the verdict, but the file appears only if an operator overrides or confirms
the verdict while the image is still held (``keep``); until then, and for good once it has left memory, the
file does not exist. Files are written whole (``edge.durable``): a kill or power cut leaves none half-written.

What is deleted (``enforce_retention``), oldest first: images past ``keep_days``; then while the images use
more than the budget (``budget_bytes``) or the data filesystem's free space is under the floor
(``min_free_bytes``), whichever binds. Under the floor with nothing left to delete, new images are not kept
(``reserve`` gives None) and inspection goes on; the station raises an alarm saying so."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from edge.durable import TEMPORARY, fsync_folder, write_durably
from edge.recent_images import Held, RecentImages
from vision.images import encode_png

log = logging.getLogger(__name__)

# What an archived file holds: encoded bytes, pixels, or a function that renders the pixels when written
FileContent = bytes | npt.NDArray[np.uint8] | Callable[[], npt.NDArray[np.uint8] | None]


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


# How free space is read: shutil.disk_usage; tests inject a probe to simulate a full filesystem.
FreeSpaceProbe = Callable[[Path], DiskUsage]


def _disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)


class ImageArchive:
    def __init__(self, data_dir: Path, policy: str = "ng", min_free_mb: float = 1000.0, keep_days: int = 90,
                 budget_mb: float = 0.0, ok_sample_rate: float = 0.0, recent_ok_mb: float = 0.0,
                 free_space_probe: FreeSpaceProbe = _disk_usage) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "images"
        self.policy = policy
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.keep_days = keep_days
        self.budget_bytes = int(budget_mb * 1024 * 1024)
        self.ok_sample_rate = ok_sample_rate
        self.recent = RecentImages(int(recent_ok_mb * 1024 * 1024))
        self._probe = free_space_probe
        self._random = random.Random()
        self.skipped_low_disk = 0  # images not kept because the floor was reached
        self.removed_files = 0  # deleted by retention (age, budget, floor)
        self.failed_writes = 0
        self.bytes_used = self._measure()
        self._writing: dict[str, Held] = {}  # kept images on their way to disk, still served from memory
        self._writing_lock = threading.Lock()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer")

    def wants(self, decision: str) -> bool:
        if self.policy == "all":
            return True
        if self.policy != "ng":
            return False
        return decision in ("NG", "INVALID") or self.ok_sample_rate > 0 or self.recent.budget_bytes > 0

    def held_only(self, decision: str) -> bool:
        """Whether a part judged ``decision`` has its image held in memory only (an OK one under ``ng`` that
        ``ok_sample_rate`` did not pick), rather than written now."""
        return self.policy == "ng" and decision == "OK" and self._random.random() >= self.ok_sample_rate

    def free_bytes(self) -> int:
        return self._probe(self.data_dir).free

    def below_floor(self) -> bool:
        return self.free_bytes() < self.min_free_bytes

    def reserve(self, extension: str) -> Path | None:
        """A new file path for an image to keep, or None when the disk is too full to keep one."""
        if self.below_floor():
            self.skipped_low_disk += 1
            return None
        path = self._new_path(extension)
        self._make_folder(path.parent)
        return path

    def hold(self, extension: str, content: Held) -> Path | None:
        """Hold an image in memory only, under a path reserved for it should it be kept (``keep``); None
        when it cannot be held (no memory budget, or larger than it)."""
        path = self._new_path(extension)
        return path if self.recent.put(self._ref(path), content) else None

    def keep(self, ref: str | None) -> Future[None] | None:
        """Write a held image to its reserved path (its verdict was overridden or confirmed), off the
        caller's thread; None when it is no longer held or the disk is too full."""
        content = self.recent.pop(ref) if ref else None
        if ref is None or content is None:
            return None
        path = self.data_dir / ref
        if not path.resolve().is_relative_to(self.root.resolve()):
            return None
        if self.below_floor():
            self.skipped_low_disk += 1
            return None
        self._make_folder(path.parent)
        with self._writing_lock:
            self._writing[ref] = content
        written = self.write_later([(path, content)])
        written.add_done_callback(lambda _: self._done_writing(ref))
        return written

    def _done_writing(self, ref: str) -> None:
        with self._writing_lock:
            self._writing.pop(ref, None)

    def held(self, ref: str) -> bytes | None:
        """A held image (or one on its way to disk) as a file's bytes: an upload as it came, a camera frame
        as PNG; None when it is not in memory."""
        content = self.recent.get(ref)
        if content is None:
            with self._writing_lock:
                content = self._writing.get(ref)
        if content is None:
            return None
        return content if isinstance(content, bytes) else encode_png(content, 1)

    def _new_path(self, extension: str) -> Path:
        return self.root / datetime.now(UTC).strftime("%Y-%m-%d") / f"{uuid.uuid4().hex}.{extension}"

    def _make_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                fsync_folder(folder.parent)  # a new day's folder: its name survives a power cut

    def ref(self, path: Path | None) -> str | None:
        """The reference stored in a verdict row: the path relative to the data folder."""
        return None if path is None else self._ref(path)

    def _ref(self, path: Path) -> str:
        return path.relative_to(self.data_dir).as_posix()

    def write(self, path: Path | None, data: bytes | npt.NDArray[np.uint8], sync_folder: bool = True) -> None:
        """Write raw bytes, or pixels as PNG, to a reserved path, whole or not at all (synced before the
        rename; the folder too unless the caller syncs it once for several files)."""
        if path is not None:
            encoded = data if isinstance(data, bytes) else encode_png(data, 1)
            write_durably(path, encoded, sync_folder)
            self.bytes_used += len(encoded)

    def write_later(self, files: list[tuple[Path, FileContent]]) -> Future[None]:
        """Render (content given as a function), encode and write in the background, off the inspection
        path (each folder synced once); the Future says when done."""
        def write_all() -> None:
            folders: set[Path] = set()
            for path, content in files:
                try:
                    data = content() if callable(content) else content
                    if data is not None:
                        self.write(path, data, sync_folder=False)
                        folders.add(path.parent)
                except OSError as exc:
                    self.failed_writes += 1
                    log.error("image archive write of %s failed: %s", path, exc)
            for folder in folders:
                try:
                    fsync_folder(folder)
                except OSError as exc:
                    log.error("image archive sync of %s failed: %s", folder, exc)

        return self._writer.submit(write_all)

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete day folders older than ``keep_days``, then the oldest images while over
        the budget or under the free-space floor (down to 90 % of the budget, 110 % of the floor, so the
        next sweep has room). Verdict rows keep their (now dangling) references. Returns files removed."""
        if not self.root.is_dir():
            return 0
        now = now or datetime.now(UTC)
        removed = 0
        cutoff = (now - timedelta(days=self.keep_days)).strftime("%Y-%m-%d")
        for day in self._days():
            if day.name >= cutoff:
                break
            for file in list(day.iterdir()):
                removed += self._delete(file)
            with contextlib.suppress(OSError):
                day.rmdir()
        if self._over_limits(slack=1.0):
            removed += self._delete_oldest()
        self.removed_files += removed
        if removed:
            log.info("image retention removed %d files (%d bytes kept)", removed, self.bytes_used)
        return removed

    def _over_limits(self, slack: float) -> bool:
        return self._over_budget(slack) or self._short_of_space(slack)

    def _over_budget(self, slack: float) -> bool:
        return self.budget_bytes > 0 and self.bytes_used > self.budget_bytes * slack

    def _short_of_space(self, slack: float) -> bool:
        return self.free_bytes() < self.min_free_bytes * (2 - slack)

    def _delete_oldest(self) -> int:
        removed = 0
        for day in self._days():
            finished = (f for f in day.iterdir() if not f.name.endswith(TEMPORARY))  # not one being written
            for index, file in enumerate(sorted(finished, key=_mtime)):
                if index % 20 == 0:  # statvfs every 20 files, the budget (a counter) every file
                    short = self._short_of_space(slack=0.9)
                if not short and not self._over_budget(slack=0.9):
                    return removed
                removed += self._delete(file)
            with contextlib.suppress(OSError):
                day.rmdir()  # only succeeds once empty
        return removed

    def _days(self) -> list[Path]:
        """The day folders, oldest first (YYYY-MM-DD sorts by date)."""
        return sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def _delete(self, file: Path) -> int:
        try:
            size = file.stat().st_size
            file.unlink()
        except OSError:
            return 0
        self.bytes_used = max(0, self.bytes_used - size)
        return 1

    def _measure(self) -> int:
        """The bytes the images use; a file left half-written by a kill (``*.tmp`` older than a minute: a write
        takes milliseconds, so not one another archive of the same folder is writing) is removed."""
        total = 0
        abandoned = time.time() - 60.0
        if self.root.is_dir():
            for folder, _, names in os.walk(self.root):
                for name in names:
                    with contextlib.suppress(OSError):
                        path = os.path.join(folder, name)
                        if not name.endswith(TEMPORARY):
                            total += os.stat(path).st_size
                        elif os.stat(path).st_mtime < abandoned:
                            os.unlink(path)
        return total

    def resolve(self, ref: str) -> Path | None:
        """The file behind a stored reference, refusing anything outside the archive."""
        path = (self.data_dir / ref).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path

    def remove(self, ref: str | None) -> None:
        if ref:
            self.recent.pop(ref)
            path = self.resolve(ref)
            if path is not None:
                try:
                    size = path.stat().st_size
                    os.unlink(path)
                    self.bytes_used = max(0, self.bytes_used - size)
                except OSError as exc:
                    log.warning("could not remove %s: %s", path, exc)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0

