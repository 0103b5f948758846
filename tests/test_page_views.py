"""The page's HTML and /docs: rendered in the chosen language, every asset served by the station."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import write_station_config

from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)
ASSETS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


@pytest.fixture
def closed(tmp_path: Path) -> Iterator[TestClient]:
    """A station that grants nothing without a credential: the page shell must still load."""
    station = Station(load_config(write_station_config(tmp_path, access={"anonymous_scopes": []})))
    station.start(with_sources=False)
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            yield client
    finally:
        station.stop()


def test_operator_view_in_the_chosen_language_with_local_assets_only(closed: TestClient) -> None:
    english = closed.get("/", headers={"Accept-Language": "de-DE,en;q=0.5"})
    assert english.status_code == 200 and english.headers["content-language"] == "en"
    assert '<meta charset="utf-8">' in english.text and "Inspection station" in english.text
    chinese = closed.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert chinese.headers["content-language"] == "zh" and "检测工位" in chinese.text
    remembered = closed.get("/", headers={"Accept-Language": "zh-CN"}, cookies={"edge_lang": "en"})
    assert remembered.headers["content-language"] == "en"
    assert not EXTERNAL.search(english.text)
    for asset in ASSETS.findall(english.text):
        assert closed.get(asset).status_code == 200, asset
    assert closed.get("/api/v1/events").status_code == 401  # the data stays behind the API's scopes


def test_docs_load_swagger_ui_from_the_station(closed: TestClient) -> None:
    docs = closed.get("/docs")
    assert docs.status_code == 200
    assert not re.search(r"https?://", docs.text.split("<body>")[0] + "".join(ASSETS.findall(docs.text)))
    urls = re.findall(r"""(?:src|href)=["']?(/static/swagger-ui/[^"' >]+)""", docs.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        assert closed.get(url).status_code == 200, url
    assert closed.get("/redoc").status_code == 404
