"""Helpers shared by the tests (a plain module: conftest names collide across folders)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import yaml
from PIL import Image

os.environ.setdefault("PYLON_CAMEMU", "1")  # pypylon's camera emulator; read at its first enumeration

from modelkit import dark_part, make_brightness_model

from edge.access import create_token
from edge.station import Station

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASETS = PROJECT_ROOT.parent / "shared" / "datasets"
EDGE_INSPECT = [sys.executable, "-m", "edge.cli"]


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (scripts/install-system-deps.sh), driven by Playwright
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def encode(pixels: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, pixels)
    assert ok
    return bytes(buffer)


def jpeg(spot: bool = False, seed: int = 0) -> bytes:
    return encode(dark_part(spot=spot, seed=seed), ".jpg")


def pil_bytes(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def bearer(station: Station, name: str, scopes: list[str]) -> dict[str, str]:
    """Authorization headers of a new API token of a running station (created through its own store)."""
    assert station.store is not None
    _, secret = station.store.submit(lambda conn: create_token(conn, "test", name, scopes)).result()
    return {"Authorization": f"Bearer {secret}"}


def cli_token(config: Path, name: str, *scopes: str) -> dict[str, str]:
    """Authorization headers of a token made with `edge-inspect tokens create` on a station file."""
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    out = subprocess.run([*EDGE_INSPECT, "tokens", "create", "--name", name, *args, "--json", "--config", str(config)],
                         check=True, capture_output=True, text=True, cwd=PROJECT_ROOT).stdout
    return {"Authorization": f"Bearer {json.loads(out)['token']}"}


def write_station_config(folder: Path, **overrides: object) -> Path:
    """A station file whose data folder holds the small brightness model (v1)."""
    data = folder / "data"
    make_brightness_model(data / "models")
    config: dict[str, object] = {
        "station": {"id": "test-station"},
        "storage": {"data_dir": str(data), "save_images": "ng", "min_free_mb": 10},
        "models": {"threads": 1, "vision": "bright-spot"},
        "api": {"host": "127.0.0.1", "port": 8080, "max_upload_mb": 1},
    }
    for key, value in overrides.items():
        config[key] = value
    path = folder / "station.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


class LiveService:
    """``edge-inspect run`` in a subprocess, on a loopback port."""

    def __init__(self, config: Path, port: int, *extra_args: str) -> None:
        self.config = config
        self.port = port
        self.extra_args = extra_args
        self.url = f"http://127.0.0.1:{port}"
        self.log = config.parent / f"service-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> LiveService:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*EDGE_INSPECT, "run", "--config", str(self.config), "--port", str(self.port), *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"service not ready after {timeout_s}s: {self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=15)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


