"""The SQLite verdict store: schema, group commits, isolation of failures, reads."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import sqlite_utils

from edge.store import ConflictError, NewVerdict, NotFoundError, PartContext, RecordEvent, VerdictStore
from edge.store.schema import LATEST_VERSION, connect, current_version, migrate
from edge.store.verify import verify_chains


def verdict(decision: str = "OK", score: float = 0.1) -> NewVerdict:
    return NewVerdict("vision", decision, "good" if decision == "OK" else "defect", score, 0.5,  # type: ignore[arg-type]
                      "m", 3, 1.5, details={"k": 1})


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = VerdictStore(tmp_path / "v.db")
    store.start()
    yield store
    store.close()


def test_schema_is_versioned_and_migration_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    db = sqlite_utils.Database(connect(path))
    assert migrate(db, path) == list(range(1, LATEST_VERSION + 1)) and migrate(db, path) == []
    assert current_version(db) == LATEST_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("INSERT INTO schema_version VALUES (99, 'future', 'x')")
    with pytest.raises(RuntimeError, match="newer than this software"):
        migrate(db, path)


def test_records_are_traceable_and_parts_reinspected(store: VerdictStore) -> None:
    batch = store.open_batch("LOT1", "st1", "user:ann").result()
    first = store.record(PartContext("st1", "api", serial="SN1", lot="LOT1", actor="token:aoi"),
                         [verdict("NG", 0.9)]).result()
    again = store.record(PartContext("st1", "api", serial="SN1", lot="LOT1"), [verdict("OK")]).result()
    assert first.part_id == again.part_id and first.batch_id == again.batch_id == batch.id
    row = store.verdict(first.verdict_id)
    assert row is not None
    assert (row.serial, row.lot, row.station, row.model_name, row.model_version, row.actor) == \
        ("SN1", "LOT1", "st1", "m", 3, "token:aoi")
    assert row.details == {"k": 1}
    reinspection = store.verdict(again.verdict_id)
    assert reinspection is not None and reinspection.refers_to == first.verdict_id, "a re-inspection refers back"
    assert reinspection.created_at >= row.created_at
    parts = [tuple(r) for r in store.reader().execute("SELECT inspections, decision FROM parts")]
    assert parts == [(2, "OK")]
    assert store.audit_log()[0].action == "batch_opened" and store.audit_log()[0].actor == "user:ann"


def test_a_late_answer_is_recorded_beside_the_verdict_not_over_it(store: VerdictStore) -> None:
    stored = store.record(PartContext("st", "line"), [verdict("NG", 0.9)]).result()
    original_hash = store.verdict(stored.verdict_id).hash  # type: ignore[union-attr]
    store.mark_late(stored.verdict_id, "FAILSAFE").result()
    row = store.verdict(stored.verdict_id)
    assert row is not None and row.late and row.actuated == "FAILSAFE" and row.decision == "NG"
    assert row.hash == original_hash
    assert store.audit_log()[0].action == "verdict_answered_late"


def test_one_failing_operation_does_not_spoil_its_group(store: VerdictStore) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO verdicts (part_id) VALUES (NULL)")

    good = [store.record(PartContext("st", "api"), [verdict()]) for _ in range(20)]
    bad = store.writer.submit(broken)
    more = [store.record(PartContext("st", "api"), [verdict()]) for _ in range(20)]
    with pytest.raises(sqlite3.IntegrityError):
        bad.result()
    assert len({f.result().verdict_id for f in good + more}) == 40
    assert store.counts()["verdicts"] == 40


def test_concurrent_writers_get_unique_increasing_ids(store: VerdictStore) -> None:
    ids: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        futures = [store.record(PartContext("st", "api"), [verdict()]) for _ in range(200)]
        for future in futures:
            with lock:
                ids.append(future.result().verdict_id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 801))
    assert store.writer.commits < 800, "commits are grouped"
    assert [row.id for row in store.verdicts_since(790, 100)] == list(range(791, 801))


def test_batches_overrides_alarms(store: VerdictStore) -> None:
    first = store.open_batch("L1", "st", "user:ann", product="P").result()
    with pytest.raises(ConflictError, match="still open"):
        store.open_batch("L2", "st", "user:ann").result()
    assert store.close_batch(first.id, "user:ann").result().closed_by == "user:ann"
    second = store.open_batch("L2", "st", "user:ann").result()
    stored = store.record(PartContext("st", "api"), [verdict("NG", 0.8)]).result()
    assert stored.batch_id == second.id
    with pytest.raises(ConflictError, match="already closed"):
        store.close_batch(first.id, "user:ann").result()
    with pytest.raises(NotFoundError, match="does not exist"):
        store.override(12345, "OK", "user:ann").result()
    store.override(stored.verdict_id, "OK", "user:ann", "false call").result()
    assert store.verdict(stored.verdict_id).override_decision == "OK"  # type: ignore[union-attr]
    a1 = store.raise_alarm("overrun", "audio overrun", source="mic").result()
    assert store.raise_alarm("overrun", "audio overrun again", source="mic").result() == a1, "no duplicates"
    store.acknowledge_alarm(a1, "user:bob").result()
    assert store.raise_alarm("overrun", "a new one", source="mic").result() != a1
    assert store.clear_alarms("overrun", "mic").result() == 2
    actions = [entry.action for entry in reversed(store.audit_log())]
    assert actions == ["batch_opened", "batch_closed", "batch_opened", "verdict_overridden", "alarm_raised",
                       "alarm_acknowledged", "alarm_raised", "alarm_cleared", "alarm_cleared"]


def test_ids_beyond_sqlite_integers_name_no_record(store: VerdictStore) -> None:
    huge = 2**70
    assert store.verdict(huge) is None and store.batch(huge) is None and store.verdicts_since(huge, 10) == []
    with pytest.raises(NotFoundError):
        store.close_batch(huge, "user:ann").result()
    with pytest.raises(NotFoundError):
        store.acknowledge_alarm(huge, "user:ann").result()


def test_writes_are_durable_across_reopen(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.db")
    store.start()
    ids = [store.record(PartContext("st", "api"), [verdict()]).result().verdict_id for _ in range(5)]
    store.close()
    reopened = VerdictStore(tmp_path / "v.db")
    assert [r.id for r in reopened.verdicts_since(0, 100)] == ids
    reopened.close()


def test_stopped_store_refuses_new_work(store: VerdictStore) -> None:
    from edge.store import StoreUnavailableError

    store.writer.stop()
    with pytest.raises(StoreUnavailableError):
        store.record(PartContext("st", "api"), [verdict()])


def test_upgrade_from_v1_keeps_rows_and_backs_up_first(tmp_path: Path) -> None:
    from edge.store.schema import MIGRATIONS

    path = tmp_path / "v.db"
    db = sqlite_utils.Database(connect(path))
    first = MIGRATIONS[0]
    db.execute("BEGIN")
    db.table("schema_version").create({"version": int, "description": str, "applied_at": str}, pk="version")
    first[2](db)
    db.table("schema_version").insert({"version": 1, "description": first[1], "applied_at": "then"})
    db.execute("INSERT INTO parts (serial, station, created_at) VALUES ('SN', 'st', 'then')")
    db.execute("INSERT INTO verdicts (part_id, modality, decision, station, created_at) VALUES (1, 'vision', 'OK',"
               " 'st', 'then')")
    db.conn.commit()
    db.conn.close()
    store = VerdictStore(path)
    assert (tmp_path / "v.db.v1.bak").is_file()
    row = store.verdict(1)
    assert row is not None and row.late is False and row.recipe is None and row.serial == "SN"
    assert row.hash is not None, "rows of the earlier version are chained by the migration"
    store.close()
    assert all(report.intact for report in verify_chains(connect(path, readonly=True)))


def test_listeners_hear_every_change_inside_its_transaction(store: VerdictStore) -> None:
    heard: list[tuple[str, str, tuple[int, ...]]] = []

    def listener(conn: sqlite3.Connection, event: RecordEvent) -> None:
        heard.append((event.kind, event.action, event.ids))
        if event.kind == "override" and event.action == "confirmed":
            raise RuntimeError("a listener that fails rolls the change back")

    store.add_listener(listener)
    batch = store.open_batch("L1", "st", "user:ann").result()
    both = [verdict("NG", 0.9), replace(verdict("NG", 0.9), modality="acoustic")]
    stored = store.record(PartContext("st", "api"), both).result()
    store.override(stored.verdict_id, "OK", "user:ann").result()
    with pytest.raises(RuntimeError):
        store.override(stored.verdict_id, "OK", "user:ann").result()  # OK again: a confirmation
    alarm = store.raise_alarm("k", "m").result()
    store.close_batch(batch.id, "user:ann").result()
    assert heard[:3] == [("batch", "opened", (batch.id,)), ("verdicts", "stored", stored.verdict_ids),
                         ("override", "overridden", (1,))]
    assert heard[3][:2] == ("override", "confirmed") and heard[4:] == [("alarm", "raised", (alarm,)),
                                                                       ("batch", "closed", (batch.id,))]
    assert store.counts()["overrides"] == 1, "the failed listener's change was rolled back"
