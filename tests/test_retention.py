"""Images kept by rule and deleted oldest first at a disk budget or a free-space floor; a full disk never
stops inspection: verdicts still flow and an alarm says why images are not kept."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from fastapi.testclient import TestClient
from support import LiveService, bearer, free_port, jpeg, write_station_config

from edge.api.app import create_app
from edge.archive import DiskUsage, ImageArchive
from edge.config import load_config
from edge.retention.keeper import ALARM_KIND, StorageKeeper
from edge.station import Station
from edge.store import NewVerdict, PartContext, VerdictStore
from vision.images import decode_image

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


def test_ok_images_are_held_in_memory_and_written_only_when_kept(tmp_path: Path) -> None:
    frame = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)  # a camera part: its pixels, as the path has them
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0, recent_ok_mb=3 * frame.nbytes / 2**20)
    try:
        assert archive.wants("OK") and archive.held_only("OK") and not archive.held_only("NG")
        paths = [archive.hold("png", frame + i) for i in range(4)]  # room for three: the first is dropped
        assert all(p is not None for p in paths)
        refs = [str(archive.ref(p)) for p in paths]
        assert not (tmp_path / "images").exists(), "nothing written, not even a folder"
        assert archive.held(refs[0]) is None and archive.recent.dropped == 1
        assert archive.recent.bytes == 3 * frame.nbytes
        held = archive.held(refs[1])
        assert held is not None and np.array_equal(decode_image(held, 10**6).pixels, frame + 1)  # PNG on request
        assert archive.keep(refs[0]) is None  # gone from memory: nothing to keep
        kept = archive.keep(refs[1])
        assert kept is not None
        kept.result()
        path = archive.resolve(refs[1])
        assert path == paths[1] and np.array_equal(decode_image(path.read_bytes(), 10**6).pixels, frame + 1)
        assert archive.held(refs[1]) is None and archive.keep(refs[1]) is None  # on disk now, once
        assert archive.bytes_used == path.stat().st_size
        archive.remove(refs[2])  # a verdict that could not be stored: its image goes from memory too
        assert archive.held(refs[2]) is None and [p.name for p in paths[1].parent.iterdir()] == [paths[1].name]
        assert archive.hold("png", np.zeros((4096, 4096), np.uint8)) is None  # larger than the whole budget
        assert archive.hold("png", np.zeros((4096, 4096), np.uint8)[:8, :8]) is None  # a crop keeps its frame
        assert archive.keep("../../etc/passwd") is None
    finally:
        archive.close()


def test_ok_sample_rate_keeps_a_share_for_good(tmp_path: Path) -> None:
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0, ok_sample_rate=0.5)
    kept = sum(1 for _ in range(400) if not archive.held_only("OK"))
    assert 140 < kept < 260  # binomial(400, 0.5): far outside 5 sigma otherwise
    assert not ImageArchive(tmp_path, "ng", min_free_mb=0).wants("OK")  # no share, no memory: OK images not kept
    assert not ImageArchive(tmp_path, "all", min_free_mb=0, recent_ok_mb=8).held_only("OK")  # all: written


def test_images_are_written_whole_and_a_half_written_one_is_cleared(tmp_path: Path) -> None:
    archive = ImageArchive(tmp_path, "ng", min_free_mb=0)
    try:
        path = archive.reserve("jpg")
        assert path is not None
        archive.write_later([(path, b"whole image")]).result()
        assert path.read_bytes() == b"whole image" and [p.name for p in path.parent.iterdir()] == [path.name]
        failing = archive.reserve("png")
        assert failing is not None

        def crash() -> np.ndarray:
            raise OSError(28, "No space left on device")

        archive.write_later([(failing, crash)]).result()
        assert not failing.exists() and archive.failed_writes == 1
        cut_short = path.parent / "cut-short.png.tmp"  # what a kill mid-write leaves
        cut_short.write_bytes(b"half")
        writing = path.parent / "being-written.png.tmp"  # what another archive of the folder is writing now
        writing.write_bytes(b"hal")
        os.utime(cut_short, (time.time() - 120, time.time() - 120))
    finally:
        archive.close()
    again = ImageArchive(tmp_path, "ng", min_free_mb=0)
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, writing.name])
    assert again.bytes_used == len(b"whole image")


def test_an_override_keeps_an_ok_image_and_only_then_is_it_written(tmp_path: Path) -> None:
    """Through the API: OK images are held in memory and never written; the operator's override (or
    confirmation) of one writes it under the ref its verdict already has, and its workbench sample is
    usable; one dropped from memory is 404 and its override keeps nothing."""
    config = write_station_config(tmp_path, storage={"data_dir": str(tmp_path / "data"), "save_images": "ng",
                                                     "min_free_mb": 10, "recent_ok_images_mb": 0.05})
    station = Station(load_config(config))
    station.start(with_sources=False)
    images = tmp_path / "data" / "images"
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            operator = bearer(station, "ann", ["operator"])
            tech = bearer(station, "tech", ["maintenance"])
            uploads = [jpeg(seed=i) for i in range(3)]
            assert sum(map(len, uploads)) < 0.05 * 2**20 < 2 * sum(map(len, uploads))  # three fit, six do not
            ok = [client.post(VISION, content=u, headers={"content-type": "image/jpeg"}).json() for u in uploads]
            assert all(v["decision"] == "OK" for v in ok)
            refs = [station.store.verdict(v["id"]).image_ref for v in ok]  # type: ignore[union-attr]
            assert all(refs) and not list(images.rglob("*.*")), "OK images are not written"
            for verdict, upload in zip(ok, uploads, strict=True):
                assert client.get(f"/api/v1/verdicts/{verdict['id']}/image").content == upload  # from memory

            confirmed = client.post(f"/api/v1/verdicts/{ok[1]['id']}/override", headers=operator,
                                    json={"decision": "NG", "label": "scratch", "reason": "a fine scratch"})
            assert confirmed.status_code == 200, confirmed.text
            station.inspection.archive.write_later([]).result()  # the writer thread has done what was queued
            written = [p for p in images.rglob("*.*")]
            assert [p.relative_to(tmp_path / "data").as_posix() for p in written] == [refs[1]]
            assert written[0].read_bytes() == uploads[1]
            sample = client.get("/api/v1/samples?label=scratch", headers=tech).json()["samples"]
            assert [s["verdict_id"] for s in sample] == [ok[1]["id"]] and sample[0]["has_image"]
            assert client.get(sample[0]["image_url"], headers=tech).content == uploads[1]
            assert station.inspection.archive.resolve(str(refs[1])) == written[0]  # what retraining reads

            for seed in range(3, 9):  # newer OK parts push the first ones out of memory
                client.post(VISION, content=jpeg(seed=seed), headers={"content-type": "image/jpeg"})
            assert station.inspection.archive.recent.bytes <= 0.05 * 2**20
            gone = client.get(f"/api/v1/verdicts/{ok[0]['id']}/image")
            assert gone.status_code == 404 and "not kept" in gone.json()["error"]["message"]
            late = client.post(f"/api/v1/verdicts/{ok[0]['id']}/override", headers=operator,
                               json={"decision": "OK", "reason": "checked"})
            assert late.status_code == 200
            station.inspection.archive.write_later([]).result()
            assert len(list(images.rglob("*.*"))) == 1, "an image no longer held is not kept; no other OK one"
            metrics = client.get("/metrics").text
            dropped = station.inspection.archive.recent.dropped
            assert dropped >= 1 and f'edge_archive_events{{event="ok_dropped"}} {float(dropped)}' in metrics
            assert f"edge_recent_ok_image_bytes {float(station.inspection.archive.recent.bytes)}" in metrics
    finally:
        station.stop()


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
        assert archive.reserve("png") is None and archive.skipped_low_disk == 1
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
        assert archive.reserve("png") is not None
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
