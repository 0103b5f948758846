"""Images kept by rule and deleted oldest first at a disk budget or a free-space floor; a full disk never
stops inspection: verdicts still flow and an alarm says why images are not kept."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from support import LiveService, free_port, jpeg, write_station_config

from edge.archive import DiskUsage, ImageArchive
from edge.config import load_config
from edge.retention.keeper import ALARM_KIND, StorageKeeper
from edge.store import NewVerdict, PartContext, VerdictStore

VISION = "/api/v1/verdicts/vision"


class FakeDisk:
    """The free-space probe seam (``ImageArchive(free_space_probe=...)``): a filesystem whose free space the
    test sets, since a small real filesystem (a loop mount, a tmpfs) needs root."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, path: Path) -> DiskUsage:
        return DiskUsage(10**12, 10**12 - self.free, self.free)


def images(root: Path, day: str, count: int, size: int, first_mtime: float) -> list[Path]:
    folder = root / "images" / day
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i:03d}.png"
        path.write_bytes(b"x" * size)
        os.utime(path, (first_mtime + i, first_mtime + i))
        paths.append(path)
    return paths


def test_budget_deletes_oldest_first(tmp_path: Path) -> None:
    start = time.time() - 1000
    older = images(tmp_path, "2026-12-01", 10, 100_000, start)
    newer = images(tmp_path, "2026-12-02", 10, 100_000, start + 100)
    archive = ImageArchive(tmp_path, min_free_mb=0, keep_days=3650, budget_mb=1.0)  # 2 MB kept, 1 MB allowed
    assert archive.bytes_used == 2_000_000
    removed = archive.enforce_retention(now=datetime(2026, 12, 3, tzinfo=UTC))
    kept = [p for p in older + newer if p.exists()]
    assert removed == len(older + newer) - len(kept) and archive.removed_files == removed
    assert archive.bytes_used <= 1024 * 1024 * 0.9  # down to 90 % of the budget: room before the next sweep
    assert kept == (older + newer)[-len(kept):]  # exactly the newest survive
    assert not (tmp_path / "images" / "2026-12-01").exists()
    assert archive.enforce_retention(now=datetime(2026, 12, 3, tzinfo=UTC)) == 0  # under budget now


def test_floor_deletes_until_free_space_returns(tmp_path: Path) -> None:
    files = images(tmp_path, "2026-12-01", 40, 1000, time.time() - 1000)
    disk = FakeDisk(free=5 * 2**20)

    def freeing(path: Path) -> DiskUsage:  # every deleted file gives 1 MB back to the fake disk
        return disk(path)._replace(free=disk.free + sum(2**20 for f in files if not f.exists()))

    archive = ImageArchive(tmp_path, min_free_mb=6, keep_days=3650, free_space_probe=freeing)
    removed = archive.enforce_retention(now=datetime(2026, 12, 2, tzinfo=UTC))
    assert 0 < removed < len(files)
    assert files[0].exists() is False and files[-1].exists()  # oldest first
    assert not archive.below_floor()


def test_ok_images_wait_for_an_override_then_go(tmp_path: Path) -> None:
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0, ok_grace_minutes=5)
    assert archive.wants("OK") and archive.wants("NG")
    ng = archive.reserve("png", "NG")
    overridden = archive.reserve("png", "OK")
    plain = archive.reserve("png", "OK")
    assert ng is not None and overridden is not None and plain is not None
    assert ".grace." not in ng.name and ".grace." in overridden.name and ".grace." in plain.name
    for path in (ng, overridden, plain):
        archive.write(path, np.zeros((8, 8), np.uint8))
    asked: list[datetime] = []

    def pinned(since: datetime) -> set[str]:
        asked.append(since)
        return {str(archive.ref(overridden))}

    assert archive.enforce_retention(pinned=pinned) == 0 and not asked  # still in their grace period
    later = datetime.now(UTC) + timedelta(minutes=6)
    assert archive.enforce_retention(now=later, pinned=pinned) == 1
    assert ng.exists() and overridden.exists() and not plain.exists()
    assert archive.enforce_retention(now=later + timedelta(minutes=10), pinned=lambda since: set()) == 0
    assert overridden.exists()  # kept for good once pinned


def test_ok_sample_rate_keeps_a_share_for_good(tmp_path: Path) -> None:
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0, ok_sample_rate=0.5)
    names = [archive.reserve("png", "OK") for _ in range(400)]
    kept = sum(1 for n in names if n is not None and ".grace." not in n.name)
    assert 140 < kept < 260  # binomial(400, 0.5): far outside 5 sigma otherwise
    assert not ImageArchive(tmp_path, "ng", min_free_mb=0).wants("OK")  # no share, no grace: OK images not kept


def _verdict() -> NewVerdict:
    return NewVerdict("vision", "NG", "defect", 0.9, 0.5, "m", 1, 2.0)


def test_floor_raises_the_alarm_verdicts_still_flow_and_it_clears(tmp_path: Path) -> None:
    config = load_config(write_station_config(tmp_path))
    store = VerdictStore(config.database_path)
    store.start()
    disk = FakeDisk(free=1 * 2**20)  # 1 MB free; the floor is 10 MB
    archive = ImageArchive(config.data_dir, "ng", min_free_mb=10, free_space_probe=disk)
    keeper = StorageKeeper(config, store, archive)
    try:
        assert archive.reserve("png", "NG") is None and archive.skipped_low_disk == 1
        stored = store.record(PartContext("st", "api"), [_verdict()]).result()
        assert stored.verdict_id == 1  # the verdict is stored without its image
        keeper.keep_images()
        active = [a for a in store.alarms(active_only=True) if a.kind == ALARM_KIND]
        assert len(active) == 1 and "images are not kept" in active[0].message.replace("new images", "images")
        assert store.audit_log(1)[0].action == "alarm_raised"
        keeper.keep_images()  # still full: the same alarm, not a second one
        assert len([a for a in store.alarms() if a.kind == ALARM_KIND]) == 1
        disk.free = 100 * 2**20
        keeper.keep_images()
        assert not [a for a in store.alarms(active_only=True) if a.kind == ALARM_KIND]
        assert store.audit_log(1)[0].action == "alarm_cleared"
        assert archive.reserve("png", "NG") is not None
    finally:
        store.close()
        archive.close()


def test_a_running_station_on_a_full_disk_keeps_judging_and_says_why(tmp_path: Path) -> None:
    """A real `edge-inspect run` whose floor is above the disk's real free space (statvfs, no seam)."""
    floor_mb = 2**40  # a petabyte: more than any test machine has free
    config = write_station_config(tmp_path, storage={"data_dir": str(tmp_path / "data"), "save_images": "all",
                                                     "min_free_mb": floor_mb})
    service = LiveService(config, free_port()).start()
    try:
        for _ in range(3):
            response = httpx.post(service.url + VISION, content=jpeg(spot=True),
                                  headers={"content-type": "image/jpeg"}, timeout=10)
            assert response.status_code == 200, response.text
        deadline = time.monotonic() + 20
        alarms: list[dict[str, object]] = []
        while time.monotonic() < deadline and not alarms:
            alarms = [a for a in httpx.get(service.url + "/api/v1/alarms", timeout=5).json() if a["kind"] == ALARM_KIND]
            time.sleep(0.2)
        assert alarms and "not kept" in str(alarms[0]["message"])
        pulled = httpx.get(service.url + "/api/v1/verdicts", params={"since": 0}, timeout=5).json()["items"]
        assert len(pulled) == 3 and all(v["image_ref"] is None for v in pulled)
        assert not (tmp_path / "data" / "images").exists() or not any((tmp_path / "data" / "images").rglob("*.*"))
    finally:
        service.stop()
