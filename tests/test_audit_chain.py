"""The hash chains: `audit verify` passes on an honest record and names the first record altered,
deleted, inserted or reordered behind the service's back, in a real database file."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from support import EDGE_INSPECT, PROJECT_ROOT, LiveService, cli_token, free_port, jpeg, write_station_config

from edge.config import load_config
from edge.store import NewVerdict, PartContext, VerdictStore, verify
from edge.store.chain import AUDIT_FIELDS, record_hash
from edge.store.schema import connect
from edge.store.verify import verify_chains

VISION = "/api/v1/verdicts/vision"


def verdict(score: float) -> NewVerdict:
    decision = "NG" if score >= 0.5 else "OK"
    return NewVerdict("vision", decision, "defect" if decision == "NG" else "good", score, 0.5, "m", 1, 2.0,
                      details={"width": 64})


@pytest.fixture(scope="module")
def honest_record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station file whose database holds 30 verdicts and a dozen audit records."""
    folder = tmp_path_factory.mktemp("chain")
    config = write_station_config(folder)
    store = VerdictStore(load_config(config).database_path)
    store.start()
    batch = store.open_batch("LOT-1", "st", "user:ann").result()
    for i in range(30):
        stored = store.record(PartContext("st", "api", serial=f"SN{i}", actor="token:aoi"), [verdict(i / 30)]).result()
        if i % 5 == 0:
            store.override(stored.verdict_id, "OK", "user:ann", "wiped").result()
    store.raise_alarm("camera_lost", "camera 1 gone").result()
    store.close_batch(batch.id, "user:ann").result()
    store.close()
    return config


def tampered(honest: Path, tmp_path: Path, *statements: str) -> Path:
    """A copy of the station (file and data) with SQL run directly on its database."""
    shutil.copytree(honest.parent, tmp_path / "copy")
    config = tmp_path / "copy" / honest.name
    text = config.read_text().replace(str(honest.parent), str(tmp_path / "copy"))
    config.write_text(text)
    conn = sqlite3.connect(load_config(config).database_path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()
    return config


def verify_cli(config: Path) -> tuple[int, dict[str, object]]:
    done = subprocess.run([*EDGE_INSPECT, "audit", "verify", "--json", "--config", str(config)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    return done.returncode, json.loads(done.stdout)


def finding(report: dict[str, object]) -> dict[str, object]:
    found = [c["finding"] for c in report["chains"] if c["finding"]]  # type: ignore[union-attr,index]
    assert len(found) == 1, report
    return found[0]  # type: ignore[no-any-return]


def test_an_honest_record_verifies(honest_record: Path) -> None:
    code, report = verify_cli(honest_record)
    assert code == 0 and report["intact"] is True
    counts = {c["chain"]: c["records_verified"] for c in report["chains"]}  # type: ignore[union-attr,index]
    assert counts == {"verdicts": 30, "audit": 9}  # open, 6 overrides, alarm, close


def test_an_altered_verdict_is_named(honest_record: Path, tmp_path: Path) -> None:
    config = tampered(honest_record, tmp_path, "UPDATE verdicts SET score = 0.01, decision = 'OK' WHERE id = 22")
    code, report = verify_cli(config)
    assert code == 1 and report["intact"] is False
    found = finding(report)
    assert (found["chain"], found["record_id"], found["problem"]) == ("verdicts", 22, "altered")


def test_an_altered_part_serial_is_found_through_its_verdict(honest_record: Path, tmp_path: Path) -> None:
    config = tampered(honest_record, tmp_path, "UPDATE parts SET serial = 'SN-OTHER' WHERE id = 3")
    found = finding(verify_cli(config)[1])
    assert (found["chain"], found["record_id"], found["problem"]) == ("verdicts", 3, "altered")


def test_a_deleted_verdict_is_named(honest_record: Path, tmp_path: Path) -> None:
    config = tampered(honest_record, tmp_path, "PRAGMA foreign_keys=OFF", "DELETE FROM overrides WHERE verdict_id = 12",
                      "DELETE FROM verdicts WHERE id = 12")
    found = finding(verify_cli(config)[1])
    assert (found["chain"], found["record_id"], found["problem"]) == ("verdicts", 12, "deleted")


def test_deleted_records_at_the_end_are_found_by_the_chain_head(honest_record: Path, tmp_path: Path) -> None:
    config = tampered(honest_record, tmp_path, "DELETE FROM audit_log WHERE id >= (SELECT MAX(id) - 1 FROM audit_log)")
    found = finding(verify_cli(config)[1])
    assert found["chain"] == "audit" and found["problem"] == "deleted"


def test_an_inserted_audit_record_is_named(honest_record: Path, tmp_path: Path) -> None:
    """A forged record slipped into the middle (later ids shifted up), with a hash computed to fit."""
    conn = connect(load_config(honest_record).database_path, readonly=True)
    before = conn.execute("SELECT hash FROM audit_log WHERE id = 3").fetchone()[0]
    conn.close()
    values = [4, "2026-01-01T00:00:00+00:00", "user:mallory", "verdict_confirmed", "verdict", "9", None, None, None]
    forged = record_hash(before, values)
    config = tampered(honest_record, tmp_path,
                      "UPDATE audit_log SET id = id + 1000 WHERE id >= 4",
                      "UPDATE audit_log SET id = id - 999 WHERE id >= 1000",
                      f"INSERT INTO audit_log ({', '.join(AUDIT_FIELDS)}, prev_hash, hash) VALUES "
                      f"(4, '{values[1]}', 'user:mallory', 'verdict_confirmed', 'verdict', '9', NULL, NULL, NULL, "
                      f"'{before}', '{forged}')")
    found = finding(verify_cli(config)[1])
    assert (found["chain"], found["record_id"], found["problem"]) == ("audit", 4, "inserted")


def test_a_record_appended_past_the_head_is_named(honest_record: Path, tmp_path: Path) -> None:
    conn = connect(load_config(honest_record).database_path, readonly=True)
    last_id, last_hash = conn.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    conn.close()
    values = [last_id + 1, "2099-01-01T00:00:00+00:00", "user:mallory", "batch_opened", "batch", "1", None, None, None]
    config = tampered(honest_record, tmp_path,
                      f"INSERT INTO audit_log ({', '.join(AUDIT_FIELDS)}, prev_hash, hash) VALUES ({last_id + 1}, "
                      f"'{values[1]}', 'user:mallory', 'batch_opened', 'batch', '1', NULL, NULL, NULL, '{last_hash}', "
                      f"'{record_hash(last_hash, values)}')")
    found = finding(verify_cli(config)[1])
    assert (found["chain"], found["record_id"], found["problem"]) == ("audit", last_id + 1, "inserted")


def test_swapped_verdicts_are_named_as_reordered(honest_record: Path, tmp_path: Path) -> None:
    columns = "part_id, modality, model_name, model_version, label, score, threshold, decision, reason, latency_ms," \
              " image_ref, heatmap_ref, source, station, created_at, details, recipe, actuated, late, actor, " \
              "refers_to, prev_hash, hash"
    config = tampered(honest_record, tmp_path,
                      "PRAGMA foreign_keys=OFF",
                      f"CREATE TABLE keep AS SELECT id, {columns} FROM verdicts WHERE id IN (8, 9)",
                      *[f"UPDATE verdicts SET {c} = (SELECT {c} FROM keep WHERE keep.id = 17 - verdicts.id) "
                        "WHERE id IN (8, 9)" for c in columns.split(", ")])
    found = finding(verify_cli(config)[1])
    assert (found["chain"], found["record_id"], found["problem"]) == ("verdicts", 8, "reordered")


def test_verify_refuses_a_missing_database_clearly(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    done = subprocess.run([*EDGE_INSPECT, "audit", "verify", "--config", str(config)], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 2 and "no database" in done.stderr


def test_library_walk_matches_the_cli(honest_record: Path) -> None:
    reports = verify_chains(connect(load_config(honest_record).database_path, readonly=True))
    assert [r.chain for r in reports] == ["verdicts", "audit"] and all(r.intact for r in reports)


@pytest.mark.slow
def test_the_chain_verifies_after_repeated_sigkills_under_load(tmp_path: Path) -> None:
    """Verdicts from an AOI token and overrides from an operator token, the service killed with SIGKILL
    three times mid-load: every acknowledged record is there and both chains verify."""
    config = write_station_config(tmp_path)
    aoi = cli_token(config, "aoi-1", "aoi:verdict")
    operator = cli_token(config, "shift", "operator")
    acknowledged: dict[int, str] = {}
    overrides: list[int] = []
    lock = threading.Lock()
    images = [jpeg(spot=i % 3 == 0, seed=i) for i in range(6)]

    def judge(url: str, stop: threading.Event, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=5, headers=aoi) as http:
            n = 0
            while not stop.is_set():
                try:
                    response = http.post(VISION, content=images[n % 6], params={"serial": f"W{worker}-{n}"},
                                         headers={"content-type": "image/jpeg"})
                    if response.status_code == 200 and response.json()["decision"] == "NG":
                        answer = http.post(f"/api/v1/verdicts/{response.json()['id']}/override",
                                           json={"decision": "OK", "reason": "re-checked"}, headers=operator)
                        if answer.status_code == 200:
                            with lock:
                                overrides.append(answer.json()["id"])
                except httpx.HTTPError:
                    return  # killed mid-request: never acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged[response.json()["id"]] = response.json()["decision"]
                n += 1

    for _ in range(3):
        service = LiveService(config, free_port()).start()
        stop = threading.Event()
        workers = [threading.Thread(target=judge, args=(service.url, stop, w)) for w in range(3)]
        for worker in workers:
            worker.start()
        time.sleep(1.5)
        service.kill()  # SIGKILL: no shutdown hook runs
        stop.set()
        for worker in workers:
            worker.join(10)
    assert len(acknowledged) > 30 and overrides, "the load should have produced verdicts and overrides"
    conn = sqlite3.connect(load_config(config).database_path)
    stored = dict(conn.execute("SELECT id, decision FROM verdicts").fetchall())
    assert all(stored.get(i) == decision for i, decision in acknowledged.items()), "acknowledged verdicts lost"
    kept = {row[0] for row in conn.execute("SELECT id FROM overrides")}
    assert set(overrides) <= kept, "acknowledged overrides lost"
    conn.close()
    code, report = verify_cli(config)
    assert code == 0 and report["intact"] is True, report


def test_db_export_carries_lot_actor_hash_and_overrides(honest_record: Path) -> None:
    done = subprocess.run([*EDGE_INSPECT, "db", "export", "--format", "csv", "--config", str(honest_record)],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert len(rows) == 30 and rows[0]["lot"] == "LOT-1" and rows[0]["actor"] == "token:aoi"
    assert len(rows[0]["hash"]) == 64
    assert [r["override_operator"] for r in rows[:6:5]] == ["user:ann", "user:ann"]
    assert rows[5]["override_decision"] == "OK" and rows[1]["override_decision"] == ""


@pytest.mark.parametrize("tamper", ["", "UPDATE verdicts SET label = 'good' WHERE id = 17",
                                    "DELETE FROM audit_log WHERE id = (SELECT MAX(id) FROM audit_log)"])
def test_the_parallel_check_agrees_with_the_walk_in_one_piece(honest_record: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, tamper: str) -> None:
    """Long chains are checked as id ranges in two processes; any doubt falls back to the single walk."""
    config = tampered(honest_record, tmp_path, *([tamper] if tamper else []))
    path = load_config(config).database_path
    monkeypatch.setattr(verify, "PARALLEL_FROM", 5)
    parallel = verify.verify_database(path, workers=2)
    single = verify_chains(connect(path, readonly=True))
    assert parallel == single
    assert all(r.intact for r in parallel) == (tamper == "")
    quick = verify._parallel_check(path, connect(path, readonly=True), "verdicts", 2)
    assert (quick is not None) == ("verdicts" not in tamper), "intact ranges are answered without the single walk"
