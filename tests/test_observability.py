"""Observability of the real service: JSON logs with a request log that never holds a credential,
/metrics with per-stage latency and process figures, and `edge-inspect status` up and down."""

from __future__ import annotations

import json
import logging
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import EDGE_INSPECT, PROJECT_ROOT, LiveService, cli_token, free_port, jpeg, write_station_config
from test_training import part_folder

from edge.logs import JsonFormatter

VISION = "/api/v1/verdicts/vision"


@pytest.fixture(scope="module")
def json_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    folder = tmp_path_factory.mktemp("observed")
    config = write_station_config(folder, logging={"format": "json"})
    service = LiveService(config, free_port()).start()
    yield service
    service.stop()


def status(config: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_INSPECT, "status", "--config", str(config), "--port", str(port), *extra],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)


def test_json_request_log_names_the_caller_but_never_a_credential(json_service: LiveService) -> None:
    headers = cli_token(json_service.config, "qa-reader", "qms:read")
    secret = headers["Authorization"].removeprefix("Bearer ")
    pin = "PIN-48213-not-for-logs"
    with httpx.Client(base_url=json_service.url, timeout=10) as http:
        assert http.get("/api/v1/verdicts", headers=headers, params={"limit": 5}).status_code == 200
        assert http.post(VISION, content=jpeg(), headers={"content-type": "image/jpeg"}).status_code == 200
        assert http.post("/api/v1/session", json={"user": "nobody", "pin": pin}).status_code == 401
        assert http.get("/api/v1/verdicts", headers={"Authorization": "Bearer wrong-" + secret}).status_code == 401
    json_service.stop()  # flushes and ends the log
    text = json_service.log.read_text()
    assert secret not in text and pin not in text and "Bearer" not in text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is one object
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    requests = [e for e in entries if e["logger"] == "edge.http"]
    read = next(e for e in requests if e["path"] == "/api/v1/verdicts" and e["status"] == 200)
    assert read["method"] == "GET" and read["identity"] == "token:qa-reader" and read["client"] == "127.0.0.1"
    assert isinstance(read["duration_ms"], float) and read["duration_ms"] > 0
    judged = next(e for e in requests if e["path"] == VISION)
    assert judged["status"] == 200 and judged["identity"] == "anonymous@loopback"
    assert any(e["path"] == "/api/v1/session" and e["status"] == 401 for e in requests)
    json_service.start()  # the module's other tests use it


def test_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    record = logging.makeLogRecord({"name": "edge.x", "levelname": "ERROR", "msg": "failed %s", "args": ("x",),
                                    "serial": "A1"})
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed x" and entry["serial"] == "A1" and entry["level"] == "ERROR"
    assert "ValueError: boom" in entry["exception"]


def test_metrics_show_stages_queues_models_and_process(json_service: LiveService) -> None:
    with httpx.Client(base_url=json_service.url, timeout=10) as http:
        for seed in range(3):
            assert http.post(VISION, content=jpeg(seed=seed), headers={"content-type": "image/jpeg"}).status_code == 200
        text = http.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    for stage in ("decode", "model", "store_commit"):
        assert values[f'edge_stage_latency_seconds_count{{stage="{stage}"}}'] >= 3, stage
    assert values['edge_model_active_version{model="bright-spot"}'] == 1
    assert "edge_store_queue_depth" in values and "edge_store_commits" in values
    assert values["process_resident_memory_bytes"] > 10_000_000 and "process_cpu_seconds_total" in values
    assert any(key.startswith("python_info{") for key in values)


def test_status_reports_a_running_service_then_says_it_is_down(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    service = LiveService(config, free_port()).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            for spot in (False, True):
                judged = http.post(VISION, content=jpeg(spot=spot), headers={"content-type": "image/jpeg"})
                assert judged.status_code == 200
            opened = http.post("/api/v1/batches", json={"lot": "L-77"}, headers=cli_token(config, "op", "operator"))
            assert opened.status_code == 201
        up = status(config, service.port, "--json")
        assert up.returncode == 0, up.stderr
        report = json.loads(up.stdout)
        assert report["service"]["running"] and report["service"]["status"] == "ready"
        assert service.process is not None and report["service"]["pid"] == service.process.pid
        assert report["service"]["uptime_s"] >= 0 and report["models"] == {"bright-spot": 1}
        assert report["verdicts"]["total"] == 2 and report["verdicts"]["parts_last_minute"] == 2
        assert report["open_batch"]["lot"] == "L-77" and report["store_queue"] == 0
        assert report["chain_heads"]["verdicts"]["last_id"] == 2
        assert report["database"]["bytes"] > 0 and report["disk"]["free_bytes"] > 0
        text = status(config, service.port)
        assert text.returncode == 0 and "Service     READY" in text.stdout and "lot L-77" in text.stdout
    finally:
        service.stop()
    down = status(config, service.port, "--json")
    assert down.returncode == 1
    report = json.loads(down.stdout)
    assert not report["service"]["running"] and report["service"]["status"] == "down"
    assert report["verdicts"]["total"] == 2 and report["models"] == {"bright-spot": 1}
    text = status(config, service.port)
    assert text.returncode == 1 and "DOWN" in text.stdout and "2 stored" in text.stdout


def test_training_shows_a_progress_bar_on_a_terminal_and_json_without_one(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    good = part_folder(tmp_path / "good", 16)
    command = [*EDGE_INSPECT, "train", "vision", "--good", str(good), "--priority", "low", "--config", str(config)]
    controller, terminal = pty.openpty()
    drawn = b""
    with subprocess.Popen([*command, "--name", "tty-run"], stdout=subprocess.PIPE, stderr=terminal,
                          cwd=PROJECT_ROOT, env={**os.environ, "COLUMNS": "160"}) as shown_run:
        os.close(terminal)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    drawn += os.read(controller, 65536)
                except OSError:  # every end of the terminal closed
                    break
            elif shown_run.poll() is not None:
                break
        else:
            shown_run.kill()
        out, _ = shown_run.communicate(timeout=30)
    os.close(controller)
    assert shown_run.returncode == 0, drawn.decode(errors="replace")
    assert b"training tty-run" in drawn and b"ETA" in drawn and b"100%" in drawn
    assert b"tty-run v1 registered and promoted" in out

    quiet = subprocess.run([*command, "--name", "json-run", "--json"], capture_output=True, text=True,
                           cwd=PROJECT_ROOT, timeout=240)
    assert quiet.returncode == 0, quiet.stderr
    trained = json.loads(quiet.stdout)
    assert trained["name"] == "json-run" and trained["version"] == 1 and trained["active"] is True
    assert "ETA" not in quiet.stderr and "\r" not in quiet.stderr
    listed = subprocess.run([*EDGE_INSPECT, "models", "list", "--json", "--config", str(config)], capture_output=True,
                            text=True, cwd=PROJECT_ROOT, timeout=60)
    versions = {(row["name"], row["version"]): row for row in json.loads(listed.stdout)}
    assert versions[("json-run", 1)]["active"] and versions[("tty-run", 1)]["kind"] == "vision-anomaly"
