"""Keeps judged images and heat maps on disk, referenced from verdict rows by relative path."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vision.images import encode_png

log = logging.getLogger(__name__)

# What an archived file holds: encoded bytes, pixels, or a function that renders the pixels when written
FileContent = bytes | npt.NDArray[np.uint8] | Callable[[], npt.NDArray[np.uint8] | None]


class ImageArchive:
    def __init__(self, data_dir: Path, policy: str = "ng", min_free_mb: float = 1000.0,
                 keep_days: int = 90) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "images"
        self.policy = policy
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.keep_days = keep_days
        self.skipped_low_disk = 0
        self.removed_files = 0
        self.failed_writes = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer")

    def wants(self, decision: str) -> bool:
        return self.policy == "all" or (self.policy == "ng" and decision in ("NG", "INVALID"))

    def reserve(self, extension: str) -> Path | None:
        """A new file path for an image, or None when the disk is too full to keep one."""
        if shutil.disk_usage(self.data_dir).free < self.min_free_bytes:
            self.skipped_low_disk += 1
            return None
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{uuid.uuid4().hex}.{extension}"

    def ref(self, path: Path | None) -> str | None:
        """The reference stored in a verdict row: the path relative to the data folder."""
        return None if path is None else path.relative_to(self.data_dir).as_posix()

    def write(self, path: Path | None, data: bytes | npt.NDArray[np.uint8]) -> None:
        """Write raw bytes, or pixels as PNG, to a reserved path."""
        if path is not None:
            path.write_bytes(data if isinstance(data, bytes) else encode_png(data))

    def write_later(self, files: list[tuple[Path, FileContent]]) -> Future[None]:
        """Render (content given as a function), encode and write in the background, off the inspection
        path; the Future says when done."""
        def write_all() -> None:
            for path, content in files:
                try:
                    data = content() if callable(content) else content
                    if data is not None:
                        self.write(path, data)
                except OSError as exc:
                    self.failed_writes += 1
                    log.error("image archive write of %s failed: %s", path, exc)

        return self._writer.submit(write_all)

    def close(self) -> None:
        self._writer.shutdown(wait=True)

    def enforce_retention(self, now: datetime | None = None) -> int:
        """Delete day folders older than ``keep_days``, then the oldest images while free space is
        below the floor plus 10 %. Verdict rows keep their (now dangling) references. Returns files removed."""
        if not self.root.is_dir():
            return 0
        cutoff = ((now or datetime.now(UTC)) - timedelta(days=self.keep_days)).strftime("%Y-%m-%d")
        target = int(self.min_free_bytes * 1.1)
        removed = 0
        for day in sorted(p for p in self.root.iterdir() if p.is_dir()):  # YYYY-MM-DD sorts oldest first
            expired = day.name < cutoff
            if not expired and shutil.disk_usage(self.data_dir).free >= target:
                break
            for index, file in enumerate(sorted(day.iterdir(), key=lambda p: p.stat().st_mtime)):
                if not expired and index % 50 == 0 and shutil.disk_usage(self.data_dir).free >= target:
                    break
                file.unlink(missing_ok=True)
                removed += 1
            with contextlib.suppress(OSError):
                day.rmdir()  # only succeeds once empty
        self.removed_files += removed
        if removed:
            log.info("image retention removed %d files", removed)
        return removed

    def resolve(self, ref: str) -> Path | None:
        """The file behind a stored reference, refusing anything outside the archive."""
        path = (self.data_dir / ref).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path

    def remove(self, ref: str | None) -> None:
        if ref:
            path = self.resolve(ref)
            if path is not None:
                try:
                    os.unlink(path)
                except OSError as exc:
                    log.warning("could not remove %s: %s", path, exc)
