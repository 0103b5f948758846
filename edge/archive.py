"""Keeps judged images and heat maps on disk, referenced from verdict rows by relative path, by rule.

What is kept (``policy``): none, all, or ``ng``: every NG and INVALID image, a random share of OK ones
(``ok_sample_rate``), and, for ``ok_grace_minutes``, every other OK image (named ``*.grace.<ext>``) so that
an operator's later override or confirmation can keep it: the sweep after the grace period keeps those whose
verdict was overridden (a ``.kept`` marker beside the file) and deletes the rest.

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
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vision.images import encode_png

log = logging.getLogger(__name__)

# What an archived file holds: encoded bytes, pixels, or a function that renders the pixels when written
FileContent = bytes | npt.NDArray[np.uint8] | Callable[[], npt.NDArray[np.uint8] | None]
GRACE = ".grace"  # in the name of an OK image kept only until its grace period ends
KEPT = ".kept"  # the marker that keeps a grace image for good (its verdict was overridden)


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


# How free space is read: shutil.disk_usage; tests inject a probe to simulate a full filesystem.
FreeSpaceProbe = Callable[[Path], DiskUsage]
# The refs (paths relative to the data folder) to keep past their grace period: those of overridden verdicts.
PinnedRefs = Callable[[datetime], set[str]]


def _disk_usage(path: Path) -> DiskUsage:
    usage = shutil.disk_usage(path)
    return DiskUsage(usage.total, usage.used, usage.free)


class ImageArchive:
    def __init__(self, data_dir: Path, policy: str = "ng", min_free_mb: float = 1000.0, keep_days: int = 90,
                 budget_mb: float = 0.0, ok_sample_rate: float = 0.0, ok_grace_minutes: float = 0.0,
                 free_space_probe: FreeSpaceProbe = _disk_usage) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "images"
        self.policy = policy
        self.min_free_bytes = int(min_free_mb * 1024 * 1024)
        self.keep_days = keep_days
        self.budget_bytes = int(budget_mb * 1024 * 1024)
        self.ok_sample_rate = ok_sample_rate
        self.grace = timedelta(minutes=ok_grace_minutes)
        self._probe = free_space_probe
        self._random = random.Random()
        self.skipped_low_disk = 0  # images not kept because the floor was reached
        self.removed_files = 0  # deleted by retention (age, budget, floor, grace)
        self.failed_writes = 0
        self.bytes_used = self._measure()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer")

    def wants(self, decision: str) -> bool:
        if self.policy == "all":
            return True
        if self.policy != "ng":
            return False
        return decision in ("NG", "INVALID") or self.ok_sample_rate > 0 or self.grace > timedelta(0)

    def free_bytes(self) -> int:
        return self._probe(self.data_dir).free

    def below_floor(self) -> bool:
        return self.free_bytes() < self.min_free_bytes

    def reserve(self, extension: str, decision: str | None = None) -> Path | None:
        """A new file path for an image of a part judged ``decision`` (None: keep it for good), or None when
        the disk is too full to keep one."""
        if self.below_floor():
            self.skipped_low_disk += 1
            return None
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        folder = self.root / day
        folder.mkdir(parents=True, exist_ok=True)
        provisional = (self.policy == "ng" and decision == "OK" and self._random.random() >= self.ok_sample_rate)
        return folder / f"{uuid.uuid4().hex}{GRACE if provisional else ''}.{extension}"

    def ref(self, path: Path | None) -> str | None:
        """The reference stored in a verdict row: the path relative to the data folder."""
        return None if path is None else path.relative_to(self.data_dir).as_posix()

    def write(self, path: Path | None, data: bytes | npt.NDArray[np.uint8]) -> None:
        """Write raw bytes, or pixels as PNG, to a reserved path (uncompressed for an OK image kept only through
        its grace period: ~3x faster to encode, and gone in minutes)."""
        if path is not None:
            encoded = data if isinstance(data, bytes) else encode_png(data, 0 if GRACE in path.name else 1)
            path.write_bytes(encoded)
            self.bytes_used += len(encoded)

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

    def enforce_retention(self, now: datetime | None = None, pinned: PinnedRefs | None = None) -> int:
        """Sweep grace images, delete day folders older than ``keep_days``, then the oldest images while over
        the budget or under the free-space floor (down to 90 % of the budget, 110 % of the floor, so the
        next sweep has room). Verdict rows keep their (now dangling) references. Returns files removed."""
        if not self.root.is_dir():
            return 0
        now = now or datetime.now(UTC)
        removed = self._sweep_grace(now, pinned)
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
            for index, file in enumerate(sorted(day.iterdir(), key=_mtime)):
                if index % 20 == 0:  # statvfs every 20 files, the budget (a counter) every file
                    short = self._short_of_space(slack=0.9)
                if not short and not self._over_budget(slack=0.9):
                    return removed
                removed += self._delete(file)
            with contextlib.suppress(OSError):
                day.rmdir()  # only succeeds once empty
        return removed

    def _sweep_grace(self, now: datetime, pinned: PinnedRefs | None) -> int:
        """Delete the OK images whose grace period is over, but for those whose verdict was overridden."""
        if self.grace <= timedelta(0) and not any(True for _ in self._grace_files()):
            return 0
        ended = (now - self.grace).timestamp()
        due = [f for f in self._grace_files() if _mtime(f) <= ended and not _marker(f).exists()]
        if not due:
            return 0
        keep = pinned(datetime.fromtimestamp(min(_mtime(f) for f in due), UTC)) if pinned is not None else set()
        removed = 0
        for file in due:
            if self.ref(file) in keep:
                _marker(file).touch()
            else:
                removed += self._delete(file)
        return removed

    def _grace_files(self) -> Iterator[Path]:
        for day in self._days():
            yield from (f for f in day.glob(f"*{GRACE}.*") if f.suffix != KEPT)

    def _days(self) -> list[Path]:
        """The day folders, oldest first (YYYY-MM-DD sorts by date)."""
        return sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def _delete(self, file: Path) -> int:
        if file.suffix == KEPT:
            file.unlink(missing_ok=True)  # goes with its image
            return 0
        try:
            size = file.stat().st_size
            file.unlink()
        except OSError:
            return 0
        _marker(file).unlink(missing_ok=True)
        self.bytes_used = max(0, self.bytes_used - size)
        return 1

    def _measure(self) -> int:
        total = 0
        if self.root.is_dir():
            for folder, _, names in os.walk(self.root):
                for name in names:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(folder, name)).st_size
        return total

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


def _marker(image: Path) -> Path:
    return image.with_name(image.name + KEPT)
