"""The real service (``edge-inspect run``) on a loopback port: judging over HTTP, replay sources,
durability under SIGKILL, and start-up failures a technician can act on."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import cv2
import httpx
from modelkit import dark_part
from support import EDGE_INSPECT, PROJECT_ROOT, LiveService, free_port, jpeg, write_station_config

VISION = "/api/v1/verdicts/vision"


def test_live_service_judges_refuses_and_keeps_serving(live_service: LiveService) -> None:
    with httpx.Client(base_url=live_service.url, timeout=10) as http:
        ok = http.post(VISION, files={"image": ("a.jpg", jpeg(), "image/jpeg")}, data={"serial": "A1"})
        assert ok.status_code == 200 and ok.json()["decision"] == "OK"
        ng = http.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"})
        assert ng.json()["decision"] == "NG"
        for data, content_type, status in [(b"", "image/jpeg", 400), (b"junk", "image/png", 400),
                                           (b"{}", "application/json", 415), (b"x" * 2_000_000, "image/jpeg", 413)]:
            refused = http.post(VISION, content=data, headers={"content-type": content_type})
            assert refused.status_code == status and refused.json()["error"]["message"]
        page = http.get("/api/v1/verdicts").json()
        assert [item["id"] for item in page["items"]] == [ok.json()["id"], ng.json()["id"]]
        assert http.get("/api/v1/health").json()["status"] == "ready"


def test_replay_source_accumulates_verdicts_and_skips_corrupt_frames(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(4):
        cv2.imwrite(str(frames / f"part_{i}.png"), dark_part(spot=i % 2 == 1, seed=i))
    (frames / "part_9.jpg").write_bytes(jpeg()[:100])  # a truncated frame
    config = write_station_config(tmp_path, sources=[
        {"type": "replay", "name": "cam1", "folder": str(frames), "interval_s": 0.05, "loop": True}])
    service = LiveService(config, free_port()).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            deadline = time.monotonic() + 15
            items: list[dict[str, object]] = []
            while time.monotonic() < deadline and len(items) < 8:
                items = http.get("/api/v1/verdicts?limit=1000").json()["items"]
                time.sleep(0.2)
            assert len(items) >= 8
            assert {item["source"] for item in items} == {"cam1"}
            assert {item["decision"] for item in items} == {"OK", "NG"}
            metrics = http.get("/metrics").text
            assert 'edge_source_errors_total{reason="corrupt",source="cam1"}' in metrics
            assert http.get("/api/v1/health").json()["checks"]["sources"] == {"cam1": True}
    finally:
        service.stop()


def test_acknowledged_verdicts_survive_sigkill_mid_load(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    service = LiveService(config, free_port()).start()
    acknowledged: dict[int, str] = {}
    lock = threading.Lock()
    stop = threading.Event()
    images = [jpeg(spot=i % 3 == 0, seed=i) for i in range(6)]

    def client(worker: int) -> None:
        with httpx.Client(base_url=service.url, timeout=5) as http:
            n = 0
            while not stop.is_set():
                try:
                    response = http.post(VISION, content=images[n % 6], headers={"content-type": "image/jpeg"},
                                         params={"serial": f"W{worker}-{n}"})
                except httpx.HTTPError:
                    return  # the service was killed mid-request: that verdict was never acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged[response.json()["id"]] = response.json()["decision"]
                n += 1

    workers = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(2.0)
    service.kill()  # SIGKILL: no shutdown hook runs
    stop.set()
    for worker in workers:
        worker.join(10)
    assert len(acknowledged) > 50, "the load should have produced many verdicts before the kill"

    conn = sqlite3.connect(tmp_path / "data" / "verdicts.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(conn.execute("SELECT id, decision FROM verdicts").fetchall())
    missing = [i for i in acknowledged if i not in stored]
    assert not missing, f"{len(missing)} acknowledged verdicts lost"
    assert all(stored[i] == decision for i, decision in acknowledged.items())
    conn.close()

    restarted = LiveService(config, free_port()).start()  # the database opens and serves again
    try:
        after = httpx.post(f"{restarted.url}{VISION}", content=jpeg(), headers={"content-type": "image/jpeg"})
        assert after.status_code == 200 and after.json()["id"] > max(acknowledged)
    finally:
        restarted.stop()


def run_cli(*args: str, timeout_s: float | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess; a hang fails the test (training gets longer: it is slow on a busy CI host)."""
    limit = timeout_s or (240.0 if args[:1] in (("train",), ("models",)) else 60.0)
    return subprocess.run([*EDGE_INSPECT, *args], capture_output=True, text=True, timeout=limit, cwd=PROJECT_ROOT)


def test_corrupt_or_missing_model_stops_startup_with_a_clear_message(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    onnx_file = tmp_path / "data" / "models" / "bright-spot" / "1" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10] + b"corrupted!")
    result = run_cli("run", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2
    assert "sha256" in result.stderr and "bright-spot" in result.stderr and "Traceback" not in result.stderr
    onnx_file.unlink()
    result = run_cli("run", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2 and "missing" in result.stderr and "Traceback" not in result.stderr


def test_unwritable_data_folder_and_broken_config_stop_startup(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    config = write_station_config(tmp_path, storage={"data_dir": str(blocker / "data")})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 2 and "not writable" in result.stderr and "Traceback" not in result.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("api:\n  prot: 80\n")
    result = run_cli("run", "--config", str(broken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(broken) in result.stderr and "api.prot" in result.stderr and "port" in result.stderr


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    service = LiveService(config, free_port()).start()
    ids = [httpx.post(f"{service.url}{VISION}", content=jpeg(seed=i), headers={"content-type": "image/jpeg"}
                      ).json()["id"] for i in range(5)]
    service.stop()
    assert service.process is not None
    # uvicorn re-raises SIGTERM after its graceful shutdown: a clean stop for systemd
    assert service.process.returncode in (0, -15), service.log.read_text()
    assert "station test-station stopped" in service.log.read_text()
    conn = sqlite3.connect(tmp_path / "data" / "verdicts.db")
    assert [row[0] for row in conn.execute("SELECT id FROM verdicts ORDER BY id")] == ids
