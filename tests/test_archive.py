"""Image archive: references, and retention by age and by free space. Verdict rows archived to files: the
chain still verifies, a tampered or missing file is named, the pull API says what is archived."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from support import EDGE_INSPECT, PROJECT_ROOT, bearer, write_station_config

from edge.api.app import create_app
from edge.archive import ImageArchive
from edge.config import load_config
from edge.station import Station
from edge.store import NewVerdict, PartContext, VerdictStore
from edge.store.archiving import (
    MANIFEST_SUFFIX,
    archive_verdicts,
    archived_through,
    delivered_limit,
    read_manifest,
)
from edge.store.chain import utc_now


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


# -- verdict rows archived to files ----------------------------------------------------------------------------

def _record(store: VerdictStore, count: int, prefix: str) -> list[int]:
    ids = []
    for i in range(count):
        verdict = NewVerdict("vision", "NG" if i % 3 == 0 else "OK", "defect", i / count, 0.5, "m", 1, 2.5,
                             details={"width": 64, "score_map": [0.1, float(i)]})
        ids.append(store.record(PartContext("st", "api", serial=f"{prefix}{i}", lot="L1"), [verdict]).result()
                   .verdict_id)
    return ids


@pytest.fixture
def archived(tmp_path: Path) -> Iterator[tuple[Path, VerdictStore, list[int], list[int]]]:
    """A station file whose first 120 verdicts (one overridden, one answered late) are archived in files of
    50; 10 newer ones stay live."""
    config = write_station_config(tmp_path)
    store = VerdictStore(load_config(config).database_path)
    store.start()
    old = _record(store, 120, "OLD")
    store.override(old[5], "OK", "user:ann", "wiped").result()
    store.mark_late(old[6], "FAILSAFE").result()
    cutoff = utc_now()
    new = _record(store, 10, "NEW")
    run = archive_verdicts(store, load_config(config).archive_dir, cutoff, max_records=50, removal_batch=16)
    assert (run.records, run.removed, len(run.files)) == (120, 120, 3)
    assert run.removal_transactions == 4 + 4 + 2  # 16 rows per transaction, per file
    yield config, store, old, new
    store.close()


def _verify(config: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([*EDGE_INSPECT, "audit", "verify", "--archives", "--json", "--config", str(config)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_archived_verdicts_leave_the_database_and_the_chain_still_verifies(
        archived: tuple[Path, VerdictStore, list[int], list[int]]) -> None:
    config, store, old, new = archived
    archive_dir = load_config(config).archive_dir
    assert store.counts()["verdicts"] == 10 and store.verdict(old[-1]) is None and store.verdict(new[0]) is not None
    assert store.counts()["overrides"] == 1  # the override outlives its verdict (the QMS feed carries it)
    files = sorted(archive_dir.glob("*.ndjson.gz"))
    assert [f.name for f in files] == ["verdicts-000000000001-000000000050.ndjson.gz",
                                       "verdicts-000000000051-000000000100.ndjson.gz",
                                       "verdicts-000000000101-000000000120.ndjson.gz"]
    manifest = read_manifest(files[1].with_name(files[1].name + MANIFEST_SUFFIX))
    assert (manifest.first_id, manifest.last_id, manifest.records) == (51, 100, 50)
    with gzip.open(files[1], "rt") as lines:
        first = json.loads(lines.readline())
    assert first["id"] == 51 and first["serial"] == "OLD50" and first["lot"] == "L1"
    assert manifest.prev_hash == read_manifest(files[0].with_name(files[0].name + MANIFEST_SUFFIX)).last_hash
    code, report = _verify(config)
    assert code == 0 and report["intact"], report
    assert report["chains"][0]["archived_through"] == 120 and report["chains"][0]["records_verified"] == 10
    assert report["archives"] == {"files": 3, "records_verified": 120, "intact": True, "finding": None}
    assert [e.action for e in store.audit_log(20)].count("verdicts_archived") == 3
    store.record(PartContext("st", "api"), [NewVerdict("vision", "OK", "good", 0.1, 0.5, "m", 1, 1.0)]).result()
    assert _verify(config)[0] == 0  # new verdicts chain on


def test_a_tampered_archive_file_is_named(archived: tuple[Path, VerdictStore, list[int], list[int]]) -> None:
    config, _, _, _ = archived
    target = load_config(config).archive_dir / "verdicts-000000000051-000000000100.ndjson.gz"
    with gzip.open(target, "rt") as lines:
        records = [json.loads(line) for line in lines]
    records[9]["decision"] = "OK" if records[9]["decision"] == "NG" else "NG"
    code, report = _verify(config)
    assert code == 0
    with gzip.open(target, "wt") as lines:
        lines.writelines(json.dumps(r) + "\n" for r in records)
    code, report = _verify(config)
    assert code == 1 and not report["intact"] and report["chains"][0]["finding"] is None
    finding = report["archives"]["finding"]
    assert finding["file"] == target.name and finding["problem"] == "altered_file"
    # Someone who also rewrites the recorded SHA-256 is caught at the record itself.
    conn = sqlite3.connect(load_config(config).database_path)
    with conn:
        conn.execute("UPDATE archives SET sha256 = ? WHERE file = ?", (_sha256(target), target.name))
    code, report = _verify(config)
    assert code == 1 and report["archives"]["finding"]["record_id"] == 60
    assert report["archives"]["finding"]["problem"] == "altered"


def test_a_deleted_archive_file_is_named(archived: tuple[Path, VerdictStore, list[int], list[int]]) -> None:
    config, _, _, _ = archived
    (load_config(config).archive_dir / "verdicts-000000000001-000000000050.ndjson.gz").unlink()
    code, report = _verify(config)
    assert code == 1 and report["archives"]["finding"]["problem"] == "missing"
    assert "verdicts-000000000001-000000000050" in report["archives"]["finding"]["message"]


def test_archiving_waits_for_upstream_delivery(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.db")
    store.start()
    ids = _record(store, 20, "S")
    # The outbox still owes verdict 8 (and later) to the plant: archiving stops before it.
    store.submit(lambda conn: conn.execute(
        "INSERT INTO outbox (topic, idempotency_key, payload, created_at) VALUES ('verdicts', 'k', ?, 'now')",
        (json.dumps({"id": ids[7]}),))).result()
    limit = delivered_limit(store.reader())
    assert limit == ids[6]
    run = archive_verdicts(store, tmp_path / "archive", utc_now(), limit)
    assert run.records == 7 and archived_through(store.reader()) == ids[6]
    assert store.verdict(ids[7]) is not None
    store.close()


def test_the_pull_api_says_what_is_archived(archived: tuple[Path, VerdictStore, list[int], list[int]]) -> None:
    config, store, old, new = archived
    store.close()
    station = Station(load_config(config))
    station.start()
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            page = client.get("/api/v1/verdicts", params={"since": 0, "limit": 5})
            body = page.json()
            assert page.headers["X-Archived-Through"] == "120" and body["archived_through"] == 120
            assert [v["id"] for v in body["items"]] == new[:5]
            later = client.get("/api/v1/verdicts", params={"since": body["next_cursor"]}).json()
            assert "archived_through" not in later and [v["id"] for v in later["items"]] == new[5:]
            refused = client.post(f"/api/v1/verdicts/{old[3]}/override", json={"decision": "OK"},
                                  headers=bearer(station, "op", ["operator"]))
            assert refused.status_code == 404 and "archived" in refused.text
    finally:
        station.stop()
