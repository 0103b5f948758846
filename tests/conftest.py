from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support import CHROMIUM, CHROMIUM_FLAGS, LiveService, bearer, free_port, write_station_config

from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station


@pytest.fixture
def station_config(tmp_path: Path) -> Path:
    return write_station_config(tmp_path)


@pytest.fixture
def station(station_config: Path) -> Iterator[Station]:
    station = Station(load_config(station_config))
    station.start()
    yield station
    station.stop()


@pytest.fixture
def client(station: Station) -> Iterator[TestClient]:
    with TestClient(create_app(station), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def operator_headers(station: Station) -> dict[str, str]:
    """A bearer token with the operator scope (and what it implies)."""
    return bearer(station, "test-operator", ["operator"])


@pytest.fixture
def admin_headers(station: Station) -> dict[str, str]:
    return bearer(station, "test-admin", ["admin"])


@pytest.fixture
def live_service(station_config: Path) -> Iterator[LiveService]:
    service = LiveService(station_config, free_port()).start()
    yield service
    service.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, under Playwright (the page tests skip where either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-system-deps.sh)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()
