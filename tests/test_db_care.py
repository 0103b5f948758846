"""Database care on real SQLite files: an online backup taken under write load is consistent and checked;
`db restore` refuses while a station runs, refuses a damaged or tampered backup, and round-trips; a damaged
database stops the start with what to do."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from support import EDGE_INSPECT, PROJECT_ROOT, write_station_config

from edge.config import load_config
from edge.station import StartupError, Station
from edge.store import NewVerdict, PartContext, VerdictStore
from edge.store.backup import integrity_problems, scheduled_backup
from edge.store.verify import verify_database


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_INSPECT, "db", *args, "--config", str(config)], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=180)


def _verdict(i: int) -> NewVerdict:
    return NewVerdict("vision", "NG" if i % 2 else "OK", "defect", 0.3, 0.5, "m", 1, 1.0, details={"i": i})


def _fill(path: Path, count: int) -> None:
    store = VerdictStore(path)
    store.start()
    for i in range(count):
        store.record(PartContext("st", "api", serial=f"P{i}"), [_verdict(i)]).result()
    store.close()


def test_backup_under_write_load_is_consistent_and_checked(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    database = load_config(config).database_path
    store = VerdictStore(database)
    store.start()
    stop = threading.Event()
    written = [0]

    def write() -> None:
        while not stop.is_set():
            store.record(PartContext("st", "api"), [_verdict(written[0])]).result()
            written[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while written[0] < 200:
            stop.wait(0.01)
        done = cli(config, "backup", str(tmp_path / "copies" / "b1.db"), "--json")
        during = written[0]
    finally:
        stop.set()
        writer.join()
        store.close()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["integrity"] == "ok" and result["backup"].endswith("b1.db")
    copy = tmp_path / "copies" / "b1.db"
    assert not (tmp_path / "copies" / "b1.db.partial").exists() and integrity_problems(copy) == []
    reports = verify_database(copy)
    assert all(r.intact for r in reports), reports  # one snapshot: the chain head matches the last row
    assert 200 <= reports[0].records <= during + 5 and reports[0].records < written[0]


def test_backup_refuses_the_database_itself(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    database = load_config(config).database_path
    _fill(database, 2)
    done = cli(config, "backup", str(database))
    assert done.returncode == 2 and "is the database itself" in done.stderr


def test_scheduled_backups_keep_the_newest(tmp_path: Path) -> None:
    database = tmp_path / "v.db"
    _fill(database, 3)
    folder = tmp_path / "backups"
    for stamp in ("20260101T000000Z", "20260102T000000Z", "20260103T000000Z"):
        (folder / f"v-{stamp}.db").parent.mkdir(exist_ok=True)
        (folder / f"v-{stamp}.db").write_bytes(b"old")
    result = scheduled_backup(database, folder, keep=2)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["v-20260103T000000Z.db", result.path.name]


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A station file with 20 verdicts, a backup of it, then 5 verdicts more."""
    config = write_station_config(tmp_path)
    database = load_config(config).database_path
    _fill(database, 20)
    assert cli(config, "backup", str(tmp_path / "b.db")).returncode == 0
    store = VerdictStore(database)
    store.start()
    for i in range(5):
        store.record(PartContext("st", "api", serial=f"late{i}"), [_verdict(i)]).result()
    store.close()
    return config, tmp_path / "b.db"


def test_restore_refuses_while_the_station_runs(backed_up: tuple[Path, Path]) -> None:
    config, backup = backed_up
    station = Station(load_config(config))
    station.start(with_sources=False)
    try:
        done = cli(config, "restore", str(backup))
    finally:
        station.stop()
    assert done.returncode == 2 and "a station is running" in done.stderr and "stop it first" in done.stderr
    assert VerdictStore(load_config(config).database_path).counts()["verdicts"] == 25  # nothing replaced


def test_restore_round_trip(backed_up: tuple[Path, Path]) -> None:
    config, backup = backed_up
    database = load_config(config).database_path
    done = cli(config, "restore", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["restored_from"] == str(backup) and all(c["intact"] for c in result["chains"])
    kept = Path(result["replaced_kept_as"])
    conn = sqlite3.connect(database)
    assert conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 20
    last = conn.execute("SELECT actor, action, after FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert last[0].startswith("cli:") and last[1] == "database_restored" and str(backup) in last[2]
    assert sqlite3.connect(kept).execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 25  # kept aside whole
    verified = subprocess.run([*EDGE_INSPECT, "audit", "verify", "--config", str(config)], capture_output=True,
                              text=True, cwd=PROJECT_ROOT, timeout=120)
    assert verified.returncode == 0, verified.stdout
    station = Station(load_config(config))  # the restored database starts
    station.start(with_sources=False)
    station.stop()


def test_restore_refuses_a_tampered_or_damaged_backup(backed_up: tuple[Path, Path], tmp_path: Path) -> None:
    config, backup = backed_up
    database = load_config(config).database_path
    before = database.read_bytes()
    tampered = tmp_path / "tampered.db"
    tampered.write_bytes(backup.read_bytes())
    with sqlite3.connect(tampered) as conn:
        conn.execute("UPDATE verdicts SET decision = 'INVALID' WHERE id = 7")
    done = cli(config, "restore", str(tampered))
    assert done.returncode == 2 and "broken hash chain" in done.stderr and "verdicts record 7" in done.stderr
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database at all" * 100)
    done = cli(config, "restore", str(damaged))
    assert done.returncode == 2 and "integrity check" in done.stderr
    assert database.read_bytes() == before and not list(database.parent.glob("*.replaced-*"))


def _damage(database: Path) -> None:
    """Overwrite the middle of the verdicts table's pages, as a failing disk would."""
    conn = sqlite3.connect(database)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'verdicts'").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(database, "r+b") as handle:
        handle.seek((page - 1) * size + 8)
        handle.write(b"\xff" * 64)


def test_a_damaged_database_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    database = load_config(config).database_path
    _fill(database, 50)
    _damage(database)
    assert integrity_problems(database, quick=True)
    station = Station(load_config(config))
    with pytest.raises(StartupError, match="failed its integrity check") as failure:
        station.start(with_sources=False)
    assert "edge-inspect db restore" in str(failure.value)
    run = subprocess.run([*EDGE_INSPECT, "run", "--config", str(config)], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, timeout=120)
    assert run.returncode != 0 and "integrity check" in run.stderr + run.stdout
    check = cli(config, "check", "--json")
    assert check.returncode == 1 and json.loads(check.stdout)["ok"] is False
