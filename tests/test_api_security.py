"""Every route declares the scope it needs and the API enforces it; a time-bounded schemathesis run
with credentials against the real service finds no 5xx and no response that breaks the schema."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import LiveService, bearer, cli_token, free_port, write_station_config

from edge.access import UNSCOPED_ROUTES, operation_scopes
from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station

SAFE = {"GET", "HEAD", "OPTIONS"}
OPEN_READS = {("GET", "/api/v1/health"), ("GET", "/api/v1/session")}  # readiness probes and "who am I"
# For each scope, a token holding everything that does not imply it.
WEAKER = {"qms:read": ["aoi:verdict"], "aoi:verdict": ["maintenance"], "operator": ["qms:read", "aoi:verdict"],
          "maintenance": ["operator", "aoi:verdict"], "admin": ["maintenance", "aoi:verdict"]}


@pytest.fixture
def closed_station(tmp_path: Path) -> Iterator[Station]:
    """A loopback station that grants nothing without a credential (as one bound beyond loopback)."""
    station = Station(load_config(write_station_config(tmp_path, access={"anonymous_scopes": []})))
    station.start(with_sources=False)
    yield station
    station.stop()


def test_every_state_changing_operation_declares_a_scope(closed_station: Station) -> None:
    scopes = operation_scopes(create_app(closed_station))
    changing = {op for op in scopes if op[0] not in SAFE}
    assert ("POST", "/api/v1/batches") in changing and ("POST", "/api/v1/line/stop") in changing
    undeclared = sorted(op for op in changing - UNSCOPED_ROUTES if scopes[op] is None)
    assert undeclared == [], f"state-changing operations without a scope: {undeclared}"
    unguarded_reads = sorted(op for op in scopes if op[0] in SAFE and scopes[op] is None and op not in OPEN_READS)
    assert unguarded_reads == [], f"reads without a scope: {unguarded_reads}"


def concrete(path: str) -> str:
    """A callable URL for an operation: every path parameter an id of 1, a file kind a real one."""
    return re.sub(r"\{[^}]+\}", "1", path.replace("{kind}", "image"))


def test_every_operation_refuses_a_missing_or_insufficient_credential(closed_station: Station) -> None:
    """Call each declared operation for real: 401 with no credential, 403 naming the scope with a token
    that holds everything but it (checked before anything is changed or even looked up)."""
    app = create_app(closed_station)
    before = closed_station.store.counts()  # type: ignore[union-attr]
    weaker = {scope: bearer(closed_station, f"all-but-{scope.replace(':', '-')}", held)
              for scope, held in WEAKER.items()}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for (method, path), scope in sorted(operation_scopes(app).items()):
            if scope is None:
                continue
            url = concrete(path)
            anonymous = client.request(method, url, json={})
            assert anonymous.status_code == 401, (method, path, anonymous.text)
            assert anonymous.json()["error"]["code"] == "not_authenticated"
            refused = client.request(method, url, json={}, headers=weaker[scope])
            assert refused.status_code == 403, (method, path, refused.text)
            assert scope in refused.json()["error"]["message"]
    after = closed_station.store.counts()  # type: ignore[union-attr]
    assert {k: after[k] for k in ("verdicts", "batches", "overrides", "alarms")} == \
        {k: before[k] for k in ("verdicts", "batches", "overrides", "alarms")}, "nothing was changed"


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    """Fuzz the OpenAPI schema of the real service (uvicorn on loopback) with an admin token, bounded in time."""
    st = Path(os.environ.get("VIRTUAL_ENV", Path(shutil.which("python") or "").parent.parent)) / "bin" / "st"
    if not st.exists():
        st = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "st"
    config = write_station_config(tmp_path)
    headers = cli_token(config, "fuzzer", "admin")
    service = LiveService(config, free_port()).start()
    try:
        done = subprocess.run(
            [str(st), "run", f"{service.url}/openapi.json", "--checks",
             "not_a_server_error,response_schema_conformance,content_type_conformance",
             "--phases", "examples,fuzzing,stateful", "--max-time", os.environ.get("FUZZ_SECONDS", "60"),
             "--workers", "2", "--request-timeout", "10", "--seed", "1",
             "-H", f"Authorization: {headers['Authorization']}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=300)
        summary = done.stdout[-6000:]
        assert done.returncode == 0, summary + done.stderr[-2000:]
        assert "Server error" not in summary and "passed" in summary, summary
        assert service.process is not None and service.process.poll() is None, "the service kept serving"
    finally:
        service.stop()
    log = service.log.read_text()
    assert "Traceback" not in log, log[-4000:]
