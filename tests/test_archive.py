"""Image archive: references, and retention by age and by free space."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge.archive import ImageArchive


def fill(root: Path, day: str, files: int) -> list[Path]:
    folder = root / "images" / day
    folder.mkdir(parents=True)
    paths = [folder / f"{i}.png" for i in range(files)]
    for path in paths:
        path.write_bytes(b"x" * 100)
    return paths


def test_reserve_write_and_resolve(tmp_path: Path) -> None:
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0)
    path = archive.reserve("png")
    archive.write(path, np.zeros((4, 4), np.uint8))
    ref = archive.ref(path)
    assert ref is not None and ref.startswith("images/")
    assert archive.resolve(ref) == path
    assert archive.resolve("../../etc/passwd") is None and archive.resolve("images/nothing.png") is None
    assert archive.wants("NG") and archive.wants("INVALID") and not archive.wants("OK")


def test_retention_removes_expired_days_only(tmp_path: Path) -> None:
    old = fill(tmp_path, "2026-01-01", 3)
    recent = fill(tmp_path, "2026-11-20", 3)
    archive = ImageArchive(tmp_path, min_free_mb=0, keep_days=30)
    assert archive.enforce_retention(now=datetime(2026, 11, 22, tzinfo=UTC)) == 3
    assert not any(p.exists() for p in old) and not (tmp_path / "images" / "2026-01-01").exists()
    assert all(p.exists() for p in recent)


def test_low_disk_deletes_oldest_first_and_stops_keeping_images(tmp_path: Path) -> None:
    old = fill(tmp_path, "2026-11-01", 3)
    newer = fill(tmp_path, "2026-11-02", 3)
    floor_mb = (shutil.disk_usage(tmp_path).free + 10**9) / 2**20  # more than is free: always "low"
    archive = ImageArchive(tmp_path, min_free_mb=floor_mb, keep_days=3650)
    assert archive.enforce_retention(now=datetime(2026, 11, 22, tzinfo=UTC)) == 6
    assert not any(p.exists() for p in old + newer)
    assert archive.reserve("png") is None and archive.skipped_low_disk == 1
