"""The push path (edge.upstream) against a real Mosquitto: outbox, MQTT publisher, webhook, collector."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from support import EDGE_INSPECT, PROJECT_ROOT, cli_token, jpeg, write_station_config
from test_upstream_broker import PG_BIN, Mosquitto, Postgres, StallingBroker, free_port, needs_mosquitto

from edge.cli import main
from edge.config import UpstreamSettings, WebhookSettings
from edge.metrics import StationMetrics
from edge.store import NewVerdict, PartContext, VerdictStore
from edge.upstream import Upstream
from edge.upstream.collector import Collector
from edge.upstream.collector_db import Incoming, SqliteCollectorDatabase, open_collector_database
from edge.upstream.topics import BrokerUrl

STATION = "st-1"
VERDICT_FIELDS = {"id", "idempotency_key", "decision", "serial", "lot", "model_version", "created_at"}


def wait_for(condition: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def fast(**overrides: Any) -> UpstreamSettings:
    """Settings with short waits, so outages and retries fit in a test."""
    values: dict[str, Any] = {"connect_timeout_s": 1.0, "ack_timeout_s": 1.0, "retry_min_s": 0.1, "retry_max_s": 0.5,
                              "state_interval_s": 0.5, "keepalive_s": 5}
    values.update(overrides)
    return UpstreamSettings.model_validate(values)


class Appliance:
    """A VerdictStore with the upstream link, as the station wires them (no models: records are written directly)."""

    def __init__(self, folder: Path, settings: UpstreamSettings) -> None:
        self.store = VerdictStore(folder / "verdicts.db")
        self.metrics = StationMetrics()
        self.upstream = Upstream(settings, STATION, self.metrics, poll_s=0.05)
        self.upstream.attach(self.store)
        self.store.start()
        self.upstream.start()
        self.serial = 0

    def record(self, count: int, lot: str = "LOT-1") -> list[int]:
        futures = []
        for _ in range(count):
            self.serial += 1
            part = PartContext(station=STATION, source="test", serial=f"SN-{self.serial:05d}", lot=lot)
            verdict = NewVerdict("vision", "NG" if self.serial % 7 == 0 else "OK", "scratch", 0.4, 0.5, "tile", 3, 1.0)
            futures.append(self.store.record(part, [verdict]))
        return [f.result(10).verdict_id for f in futures]

    def outbox_rows(self) -> int:
        return int(self.store.reader().execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        self.upstream.stop()
        self.store.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker").start()
    yield server
    server.stop()


class Subscriber:
    """A plain MQTT client that keeps what it receives (topic -> payloads), retained messages included."""

    def __init__(self, url: str, topic: str) -> None:
        parsed = BrokerUrl.parse(url)
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload), m.retain))
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, reasons, p: subscribed.set()
        self.client.connect(parsed.host, parsed.port)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK from the broker"

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [body for t, body, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def collected(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        try:
            return list(conn.execute("SELECT * FROM verdicts ORDER BY station, id"))
        except sqlite3.OperationalError:
            return []


@needs_mosquitto
def test_records_arrive_with_their_payload_contract_and_the_outbox_empties(tmp_path: Path, broker: Mosquitto) -> None:
    subscriber = Subscriber(broker.url, f"edge-inspect/{STATION}/#")
    collector = Collector(BrokerUrl.parse(broker.url), SqliteCollectorDatabase(tmp_path / "fleet.db"))
    collector.start()
    wait_for(lambda: collector.connected, what="the collector")
    station = Appliance(tmp_path, fast(mqtt_url=broker.url))
    try:
        batch = station.store.open_batch("LOT-9", STATION, "user:ann", product="tile").result(5)
        ids = station.record(5, lot="LOT-9")
        station.store.override(ids[0], "NG", "user:ann", reason="chip at the edge", label="chip").result(5)
        station.store.mark_late(ids[1], "FAILSAFE").result(5)
        alarm = station.store.raise_alarm("camera_lost", "no frame", "critical", "cam1").result(5)
        station.store.acknowledge_alarm(alarm, "user:ann").result(5)
        station.store.close_batch(batch.id, "user:ann").result(5)
        prefix = f"edge-inspect/{STATION}"
        wait_for(lambda: len(subscriber.on(f"{prefix}/batches")) == 2, what="batch open and close")
        verdicts = [v for v in subscriber.on(f"{prefix}/verdicts") if v["event"] == "stored"]
        assert [v["id"] for v in verdicts] == ids
        [late] = [v for v in subscriber.on(f"{prefix}/verdicts") if v["event"] == "late"]
        assert (late["id"], late["actuated"], late["late"]) == (ids[1], "FAILSAFE", True)
        assert late["idempotency_key"].startswith(f"{STATION}:audit:")
        for body in verdicts:
            assert set(body) >= VERDICT_FIELDS
            assert body["kind"] == "verdict" and body["event"] == "stored" and body["station"] == STATION
            assert body["lot"] == "LOT-9" and body["batch_id"] == batch.id and body["model_version"] == 3
            assert body["idempotency_key"] == f"{STATION}:verdict:{body['id']}:{body['hash']}"
        assert verdicts[1]["prev_hash"] == verdicts[0]["hash"]
        stored = station.store.verdict(ids[0])
        assert stored is not None and verdicts[0]["hash"] == stored.hash and verdicts[0]["serial"] == stored.serial
        [override] = subscriber.on(f"{prefix}/overrides")
        assert (override["verdict_id"], override["decision"], override["event"]) == (ids[0], "NG", "overridden")
        assert override["idempotency_key"].startswith(f"{STATION}:audit:")
        raised, acknowledged = subscriber.on(f"{prefix}/alarms")
        assert (raised["id"], raised["kind"], raised["event"]) == (alarm, "camera_lost", "raised")
        assert (acknowledged["id"], acknowledged["event"], acknowledged["acknowledged_by"]) == \
            (alarm, "acknowledged", "user:ann")
        assert [b["event"] for b in subscriber.on(f"{prefix}/batches")] == ["opened", "closed"]
        assert "summary" in subscriber.on(f"{prefix}/batches")[1]
        keys = [body["idempotency_key"] for _, body, _ in subscriber.messages if "idempotency_key" in body]
        assert len(keys) == len(set(keys)) == 11
        # the collector's verdict rows carry the late answer and the override that came after them
        rows = wait_for(lambda: (lambda r: r if len(r) == 5 and r[1]["late"] and r[0]["override_decision"] else None)(
            collected(tmp_path / "fleet.db")), what="late answer and override at the collector")
        assert (rows[0]["override_decision"], rows[0]["override_label"]) == ("NG", "chip")
        assert (rows[1]["actuated"], rows[1]["late"]) == ("FAILSAFE", 1)

        def messages_collected() -> int:
            with sqlite3.connect(tmp_path / "fleet.db") as conn:
                return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

        wait_for(lambda: messages_collected() == 11, what="all 11 messages at the collector")
        state = wait_for(lambda: [s for s in subscriber.on(f"{prefix}/state")
                                  if s.get("counters", {}).get("published", 0) >= 11], what="state with counters")
        assert state[-1]["state"] == "online" and state[-1]["counters"]["outbox_depth"] == 0
        wait_for(lambda: station.outbox_rows() == 0, what="the outbox to be pruned")
        assert station.metrics.upstream_published.labels("mqtt")._value.get() == 11
    finally:
        station.close()
        collector.stop()
    # an orderly stop leaves a retained offline state; a consumer arriving later reads it at once
    late = Subscriber(broker.url, f"edge-inspect/{STATION}/state")
    try:
        wait_for(lambda: late.messages, what="the retained state")
        _, body, retained = late.messages[-1]
        assert retained and body["state"] == "offline"
    finally:
        late.close()
        subscriber.close()


@needs_mosquitto
def test_broker_down_at_start_then_up_delivers_the_backlog_exactly_once(tmp_path: Path, broker: Mosquitto) -> None:
    # the plant's broker already holds the collector's persistent session (a broker discards what is published
    # before anyone subscribed), and is down when the station starts
    collector = Collector(BrokerUrl.parse(broker.url), SqliteCollectorDatabase(tmp_path / "fleet.db"))
    collector.start()
    wait_for(lambda: collector.connected, what="the collector's subscription")
    broker.stop()
    station = Appliance(tmp_path, fast(mqtt_url=broker.url, outbox_alarm_rows=50))
    try:
        ids = station.record(120)
        assert station.outbox_rows() == 120
        wait_for(lambda: any(a.kind == "upstream_backlog" for a in station.store.alarms(active_only=True)),
                 what="the backlog alarm")
        assert station.upstream.workers[0].counters.connect_failures >= 1
        broker.start()
        try:
            rows = wait_for(lambda: len(collected(tmp_path / "fleet.db")) == 120 and collected(tmp_path / "fleet.db"),
                            what="the backlog at the collector")
            assert [r["id"] for r in rows] == ids
            wait_for(lambda: not any(a.kind == "upstream_backlog" for a in station.store.alarms(active_only=True)),
                     what="the backlog alarm to clear")
        finally:
            collector.stop()
            broker.stop()
        # the chain in the payloads lets the central database name a verdict it never got
        check = ["collect", "--check", "--db", str(tmp_path / "fleet.db")]
        assert main(check) == 0
        with sqlite3.connect(tmp_path / "fleet.db") as conn:
            conn.execute("DELETE FROM verdicts WHERE id = ?", (ids[40],))
        assert main(check) == 1
        assert SqliteCollectorDatabase(tmp_path / "fleet.db").completeness()[STATION]["gaps_before"] == [ids[41]]
    finally:
        station.close()


@needs_mosquitto
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["restarted", "crashed"])
def test_broker_down_mid_stream_every_record_arrives_once(tmp_path: Path, broker: Mosquitto,
                                                         sig: signal.Signals) -> None:
    """Restarted (SIGTERM: mosquitto saves its queues) or crashed (SIGKILL: a broker loses what it had acknowledged
    but neither delivered nor saved, in a window of milliseconds), every record reaches the collector exactly once:
    what a crash lost is found by the verdict chain and asked for again on <prefix>/replay."""
    broker.stop()  # the fixture's broker, again with a save every second (the collector's session must be saved)
    broker.config.write_text(broker.config.read_text() + "autosave_interval 1\n", encoding="utf-8")
    broker.start()
    db = tmp_path / "fleet.db"
    collector = Collector(BrokerUrl.parse(broker.url), SqliteCollectorDatabase(db), repair_interval_s=0.5)
    collector.start()
    wait_for(lambda: collector.connected, what="the collector")
    # the collector's subscription must be in the broker's persistence file before a crash
    log = broker.folder / "mosquitto.log"
    saves = log.read_text().count("Saving in-memory database")
    wait_for(lambda: log.read_text().count("Saving in-memory database") > saves, what="the broker's autosave")
    station = Appliance(tmp_path, fast(mqtt_url=broker.url))
    ids: list[int] = []
    try:
        for round_ in range(12):
            ids += station.record(40)
            time.sleep(0.05)
            if round_ == 4:
                broker.stop(sig)
            if round_ == 7:
                broker.start()
        counters = station.upstream.workers[0].counters
        wait_for(lambda: [r["id"] for r in collected(db)] == ids, timeout_s=30, what="every record, once")
        assert counters.failed + counters.connect_failures >= 1
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM messages WHERE kind = 'verdicts'").fetchone()[0] == len(ids)
    finally:
        station.close()
        collector.stop()
        broker.stop()


@needs_mosquitto
@pytest.mark.parametrize("connack", [False, True], ids=["silent", "connack-then-silent"])
def test_a_stalled_broker_costs_bounded_waits_and_never_slows_inspection(tmp_path: Path, connack: bool) -> None:
    stall = StallingBroker(connack)
    station = Appliance(tmp_path, fast(mqtt_url=stall.url, connect_timeout_s=0.5, ack_timeout_s=0.5))
    try:
        slowest = 0.0
        for _ in range(30):
            started = time.perf_counter()
            station.record(1)
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.03)
        assert slowest < 0.3, f"a record took {slowest:.3f} s while the broker stalled"
        counters = station.upstream.workers[0].counters
        wait_for(lambda: counters.failed + counters.connect_failures >= 2, what="failed rounds")
        assert counters.published == 0 and station.outbox_rows() == 30
        assert stall.connections >= 2  # it keeps trying, with back-off
    finally:
        started = time.monotonic()
        station.close()
        stall.close()
    assert time.monotonic() - started < 5.0


class FlakyWebhook(BaseHTTPRequestHandler):
    """500 twice, then one request left hanging past the client's timeout, then 200s; keeps what it accepted."""

    plan: ClassVar[list[str]] = []
    accepted: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "hang":
            time.sleep(1.5)
            return
        if step == "500":
            self.send_response(500)
            self.end_headers()
            return
        FlakyWebhook.accepted.extend(json.loads(body)["messages"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_webhook_that_fails_or_hangs_is_retried_and_loses_nothing(tmp_path: Path) -> None:
    FlakyWebhook.plan = ["500", "500", "hang"]
    FlakyWebhook.accepted = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyWebhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = WebhookSettings(url=f"http://127.0.0.1:{server.server_port}/qms", timeout_s=0.5, batch_size=20,
                           headers={"Authorization": "Bearer hook-secret"})
    # MQTT is configured too but unreachable: rows stay in the outbox until both destinations have them
    station = Appliance(tmp_path, fast(webhook=hook, mqtt_url=f"mqtt://127.0.0.1:{free_port()}"))
    try:
        ids = station.record(50)
        wait_for(lambda: {m["id"] for m in FlakyWebhook.accepted} >= set(ids), what="every verdict at the webhook")
        worker = next(w for w in station.upstream.workers if w.name == "webhook")
        assert worker.counters.failed >= 3
        assert [m["id"] for m in FlakyWebhook.accepted] == sorted(m["id"] for m in FlakyWebhook.accepted)
        assert all(m["idempotency_key"] == f"{STATION}:verdict:{m['id']}:{m['hash']}" for m in FlakyWebhook.accepted)
        assert station.outbox_rows() == 50
        assert "hook-secret" not in json.dumps(station.upstream.status())
    finally:
        station.close()
        server.shutdown()


def _run_station(config: Path, port: int, mqtt_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen([*EDGE_INSPECT, "run", "--config", str(config), "--port", str(port),
                                    "--no-sources", "--mqtt-url", mqtt_url], stdout=out, stderr=subprocess.STDOUT,
                                   cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_for(lambda: _healthy(port) or process.poll() is not None, timeout_s=30, what="the station")
    assert process.poll() is None, log.read_text()
    return process


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@needs_mosquitto
def test_station_killed_with_an_undelivered_outbox_delivers_it_after_restart(tmp_path: Path) -> None:
    """`edge-inspect run --mqtt-url` end to end: SIGKILL with records owed, restart, every record arrives; the
    retained state says online, and the last will says offline once the station dies."""
    config = write_station_config(tmp_path, station={"id": STATION})
    broker_port, api_port = free_port(), free_port()
    url = f"mqtt://qms:pw-secret@127.0.0.1:{broker_port}"
    log = tmp_path / "station.log"
    process = _run_station(config, api_port, url, log)
    api = f"http://127.0.0.1:{api_port}/api/v1"
    operator = cli_token(config, "shift-lead", "operator")
    batch = httpx.post(f"{api}/batches", json={"lot": "LOT-4"}, headers=operator, timeout=10).json()["id"]
    ids = []
    for index in range(6):
        answer = httpx.post(f"{api}/verdicts/vision", params={"serial": f"SN-{index}", "batch": "LOT-4"},
                            content=jpeg(spot=index % 2 == 1, seed=index),
                            headers={"content-type": "image/jpeg"}, timeout=10)
        assert answer.status_code == 200, answer.text
        ids.append(answer.json()["id"])
    assert httpx.post(f"{api}/batches/{batch}/close", headers=operator, timeout=10).status_code == 200
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    database = tmp_path / "data" / "verdicts.db"
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT COUNT(*) FROM outbox WHERE topic = 'verdicts'").fetchone()[0] == 6
        assert "pw-secret" not in json.dumps(conn.execute("SELECT after FROM audit_log").fetchall())

    broker = Mosquitto(tmp_path / "broker", broker_port).start()
    db = tmp_path / "fleet.db"
    collector = Collector(BrokerUrl.parse(broker.url), SqliteCollectorDatabase(db))
    collector.start()
    watcher = Subscriber(broker.url, f"edge-inspect/{STATION}/state")
    try:
        wait_for(lambda: collector.connected, what="the collector")
        process = _run_station(config, api_port, url, log)
        rows = wait_for(lambda: len(collected(db)) == 6 and collected(db), what="the owed records")
        assert [r["id"] for r in rows] == ids
        def payloads() -> list[dict[str, Any]]:
            with sqlite3.connect(db) as conn:
                return [json.loads(r[0]) for r in conn.execute("SELECT payload FROM messages ORDER BY rowid")]

        body = next(p for p in payloads() if p["kind"] == "verdict")
        assert set(body) >= VERDICT_FIELDS and body["lot"] == "LOT-4" and body["serial"] == "SN-0"
        assert body["batch_id"] == batch
        # the closed batch's message carries its figures, as GET /api/v1/batches/{id}/summary answers them
        closed = wait_for(lambda: [p for p in payloads() if p["kind"] == "batch" and p["event"] == "closed"],
                          what="the closed batch")[0]
        summary = httpx.get(f"{api}/batches/{batch}/summary", timeout=10).json()
        assert closed["summary"]["parts"] == summary["parts"] == 6
        assert {k: closed["summary"][k] for k in ("ok", "ng", "invalid", "yield", "ppm", "pareto")} == \
            {k: summary[k] for k in ("ok", "ng", "invalid", "yield", "ppm", "pareto")}
        wait_for(lambda: any(s["state"] == "online" for s in watcher.on(f"edge-inspect/{STATION}/state")),
                 what="online state")
        status = wait_for(lambda: (lambda s: s if s["sinks"]["mqtt"]["outbox_depth"] == 0 else None)(
            httpx.get(f"{api}/upstream", timeout=10).json()), what="GET /api/v1/upstream with nothing owed")
        assert status["enabled"] and status["prefix"] == f"edge-inspect/{STATION}"
        assert status["sinks"]["mqtt"]["connected"] and status["sinks"]["mqtt"]["published"] >= 8
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        wait_for(lambda: watcher.on(f"edge-inspect/{STATION}/state")[-1]["state"] == "offline",
                 what="the last will")

        def collected_state() -> str:
            with sqlite3.connect(db) as conn:
                return str(conn.execute("SELECT state FROM station_state WHERE station = ?", (STATION,)).fetchone()[0])

        wait_for(lambda: collected_state() == "offline", what="the offline state at the collector")
        assert "pw-secret" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        watcher.close()
        collector.stop()
        broker.stop()


@needs_mosquitto
def test_collector_killed_mid_stream_stores_every_message_exactly_once(tmp_path: Path, broker: Mosquitto) -> None:
    """`edge-inspect collect` acknowledges a message only once committed: SIGKILLed while records stream in and
    started again, it holds every verdict once (what the broker sent again is dropped by its key)."""
    db = tmp_path / "fleet.db"
    log = tmp_path / "collector.log"
    command = [*EDGE_INSPECT, "collect", "--mqtt-url", broker.url, "--db", str(db), "--stats-interval", "0"]

    def start_collector() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        wait_for(lambda: log.read_text().count("subscribed to") > started, what="the collector's subscription")
        return process

    started = 0
    collector = start_collector()
    station = Appliance(tmp_path, fast(mqtt_url=broker.url))
    try:
        ids: list[int] = []

        def stream() -> None:
            for _ in range(30):
                ids.extend(station.record(10))
                time.sleep(0.02)

        streaming = threading.Thread(target=stream)
        streaming.start()
        wait_for(lambda: len(collected(db)) > 0, what="the first records")
        collector.send_signal(signal.SIGKILL)
        collector.wait(10)
        streaming.join()
        started = 1
        collector = start_collector()
        ids += station.record(100)
        wait_for(lambda: len(collected(db)) == len(ids), what="every record")
        assert [r["id"] for r in collected(db)] == ids
        collector.send_signal(signal.SIGTERM)
        collector.wait(10)
        assert json.loads(log.read_text().strip().splitlines()[-1])["stored"] >= 1
        assert main(["collect", "--check", "--db", str(db)]) == 0
    finally:
        if collector.poll() is None:
            collector.kill()
        station.close()


def test_upstream_settings_are_checked_with_messages_that_name_the_key(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from edge.config import ConfigError, load_config

    for upstream, expected in (({"mqtt_url": "http://broker:1883"}, "upstream.mqtt_url"),
                               ({"topic": "x"}, "upstream.topic: unknown key (allowed here: mqtt_url"),
                               ({"retry_min_s": 10, "retry_max_s": 1}, "retry_max_s must not be below")):
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            load_config(write_station_config(tmp_path, upstream=upstream))
    config = write_station_config(tmp_path, station={"id": STATION})
    assert main(["run", "--config", str(config), "--no-sources", "--mqtt-url", "mqtt://u:pw-1@127.0.0.1:99999"]) == 2
    error = capsys.readouterr().err
    assert "upstream.mqtt_url" in error and "port" in error and "pw-1" not in error


def test_upstream_route_says_when_nothing_is_pushed(client: TestClient) -> None:
    answer = client.get("/api/v1/upstream")
    assert answer.status_code == 200
    assert answer.json() == {"enabled": False, "prefix": None, "sinks": {}}


@needs_mosquitto
@pytest.mark.skipif(PG_BIN is None or importlib.util.find_spec("psycopg") is None,
                    reason="needs PostgreSQL's server binaries and psycopg (pip install 'psycopg[binary]')")
def test_collector_writes_exactly_once_into_postgresql(tmp_path: Path, broker: Mosquitto) -> None:
    import psycopg

    server = Postgres().start()
    collector = Collector(BrokerUrl.parse(broker.url), open_collector_database(None, server.url))
    collector.start()
    station = Appliance(tmp_path, fast(mqtt_url=broker.url))
    try:
        wait_for(lambda: collector.connected, what="the collector")
        ids = station.record(60)
        station.store.override(ids[0], "NG", "user:ann", label="chip").result(5)
        station.store.mark_late(ids[1], "FAILSAFE").result(5)
        with psycopg.connect(server.url) as conn:
            wait_for(lambda: conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 62, what="62 messages")
            rows = conn.execute("SELECT id, override_decision, late, actuated FROM verdicts ORDER BY id").fetchall()
            assert [r[0] for r in rows] == ids
            assert rows[0][1] == "NG" and rows[1][2:] == (True, "FAILSAFE")
            payloads = conn.execute("SELECT topic, payload FROM messages").fetchall()
        again = open_collector_database(None, server.url)
        assert again.store([Incoming(topic, text.encode()) for topic, text in payloads]) == 0
        assert again.duplicates == 62 and again.completeness()[STATION]["gaps_before"] == []
        again.close()
    finally:
        station.close()
        collector.stop()
        server.stop()


@needs_mosquitto
def test_verdicts_a_broker_lost_are_asked_for_again_and_arrive(tmp_path: Path, broker: Mosquitto) -> None:
    """The collector finds missing verdicts by their chain and asks the station for them on <prefix>/replay;
    they come back with the same idempotency keys. (Here they are deleted from the central database, as a
    crashed broker would have lost them.)"""
    db = tmp_path / "fleet.db"
    collector = Collector(BrokerUrl.parse(broker.url), SqliteCollectorDatabase(db), repair_interval_s=0.5)
    collector.start()
    wait_for(lambda: collector.connected, what="the collector")
    station = Appliance(tmp_path, fast(mqtt_url=broker.url))
    try:
        ids = station.record(50)
        wait_for(lambda: len(collected(db)) == 50, what="the records")
        lost = ids[10:15]
        with sqlite3.connect(db) as conn:
            marks = ", ".join("?" * len(lost))
            conn.execute(f"DELETE FROM verdicts WHERE id IN ({marks})", lost)
            conn.execute(f"DELETE FROM messages WHERE kind = 'verdicts' AND json_extract(payload, '$.id') IN ({marks})",
                         lost)
        wait_for(lambda: [r["id"] for r in collected(db)] == ids, what="the lost verdicts again")
        assert collector.stats()["replays_requested"] >= 1 and collector.stats()["rejected"] == 0
        assert main(["collect", "--check", "--db", str(db)]) == 0
    finally:
        station.close()
        collector.stop()
