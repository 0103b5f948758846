"""A promoted model takes over in the running service without a restart and without losing a verdict."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from modelkit import make_brightness_model
from support import LiveService, free_port, jpeg, write_station_config
from test_service_live import run_cli


def test_promotion_switches_the_running_service_without_losing_verdicts(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    service = LiveService(config, free_port()).start()
    responses: list[httpx.Response] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as http:
            while not stop.is_set():
                responses.append(http.post("/api/v1/verdicts/vision", content=jpeg(spot=True),
                                           headers={"content-type": "image/jpeg"}))

    worker = threading.Thread(target=load)
    try:
        worker.start()
        time.sleep(0.5)
        make_brightness_model(tmp_path / "data" / "models", version=2, threshold=0.99)
        assert run_cli("models", "promote", "--config", str(config), "bright-spot", "2").returncode == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and responses[-1].json()["model"]["version"] != 2:
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        worker.join(10)
        assert all(r.status_code == 200 for r in responses)
        versions = [r.json()["model"]["version"] for r in responses]
        assert versions[0] == 1 and versions[-1] == 2
        assert versions == sorted(versions), "no request goes back to the old version"
        assert responses[-1].json()["decision"] == "OK", "the new threshold applies"
        stored = httpx.get(f"{service.url}/api/v1/verdicts?limit=1000").json()["items"]
        assert sorted(item["id"] for item in stored) == sorted(r.json()["id"] for r in responses)
        assert httpx.get(f"{service.url}/api/v1/health").json()["checks"]["models"] == {"bright-spot": 2}
    finally:
        stop.set()
        service.stop()
