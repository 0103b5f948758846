"""The embedded default of `make run`: the station file shipped in config/, the bundled model and
the bundled sample images, judged through the real service."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import yaml
from support import PROJECT_ROOT, LiveService, free_port
from test_service_live import run_cli

from edge.config import DEFAULT_CONFIG, load_config
from models.registry import BUNDLED_ROOT
from models.runtime import load_model


def test_bundled_model_is_intact_and_loads() -> None:
    config = load_config(DEFAULT_CONFIG)
    folder = BUNDLED_ROOT / config.models.vision / "1"
    model = load_model(folder, threads=1)
    assert model.manifest.kind == "vision-anomaly" and "anomaly_map" in model.manifest.outputs
    assert model.manifest.training.data, "the manifest says what data the model was built from"


def test_default_station_replays_the_samples_and_judges_them_as_labelled(tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["storage"]["data_dir"] = str(tmp_path / "data")
    raw["sources"][0]["folder"] = str(PROJECT_ROOT / "samples" / "magnetic-tile")
    raw["sources"][0]["interval_s"] = 0.05
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert run_cli("config", "check", "--config", str(config)).returncode == 0
    service = LiveService(config, free_port()).start()
    try:
        deadline = time.monotonic() + 20
        items: list[dict[str, object]] = []
        while time.monotonic() < deadline and len(items) < 6:
            items = httpx.get(f"{service.url}/api/v1/verdicts?limit=100").json()["items"]
            time.sleep(0.2)
        assert len(items) >= 6
        samples = sorted(p.name for p in (PROJECT_ROOT / "samples" / "magnetic-tile").glob("*.jpg"))
        for name, verdict in zip(samples, items[:6], strict=True):  # replayed in name order
            expected = "OK" if name.startswith("free_") else "NG"
            assert verdict["decision"] == expected, (name, verdict)
            if expected == "NG":
                assert verdict["details"]["defect_region"] is not None  # type: ignore[index]
                assert httpx.get(f"{service.url}/api/v1/verdicts/{verdict['id']}/heatmap").status_code == 200
    finally:
        service.stop()
