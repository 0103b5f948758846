"""QMS figures over HTTP: batch summaries, the current summary, SPC, model drift and the batch report."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from support import jpeg

from edge.station import Station
from edge.store import NewVerdict, PartContext

VISION = "/api/v1/verdicts/vision"


def judge(client: TestClient, serial: str, spot: bool, seed: int = 0) -> dict[str, object]:
    response = client.post(VISION, files={"image": ("p.jpg", jpeg(spot=spot, seed=seed), "image/jpeg")},
                           params={"serial": serial})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def wait_for(client: TestClient, url: str, timeout_s: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(url)
        if response.status_code != 404 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def test_unknown_batches_are_404_never_500(client: TestClient) -> None:
    for batch in ("99", str(2**63), str(2**80), "-1", "0"):
        for suffix in ("summary", "report.pdf", "report.csv"):
            response = client.get(f"/api/v1/batches/{batch}/{suffix}")
            assert response.status_code in (404, 422), (batch, suffix, response.text)
            assert "error" in response.json()
    response = client.get("/api/v1/batches/99/summary")
    assert response.json()["error"]["message"] == "batch 99 does not exist"
    assert client.get("/api/v1/spc", params={"batch": 99}).status_code == 404
    assert client.get("/api/v1/spc", params={"batch": 2**70}).status_code in (404, 422)


def test_summary_report_and_csv_of_a_closed_batch(client: TestClient, operator_headers: dict[str, str],
                                                  station: Station) -> None:
    batch = client.post("/api/v1/batches", json={"lot": "LOT-R", "product": "tile"}, headers=operator_headers).json()
    for n in range(12):
        judge(client, f"SN-{n}", spot=n % 4 == 0, seed=n)
    rejudged = judge(client, "SN-0", spot=False, seed=99)  # SN-0 was NG, now OK: one part, first pass failed
    override = client.post(f"/api/v1/verdicts/{rejudged['id']}/override", headers=operator_headers,
                           json={"decision": "NG", "reason": "edge chip seen by eye", "label": "chip"})
    assert override.status_code in (200, 201), override.text

    summary = client.get(f"/api/v1/batches/{batch['id']}/summary")
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert (body["parts"], body["ok"], body["ng"], body["invalid"]) == (12, 9, 3, 0)
    assert body["yield"] == pytest.approx(9 / 12) and body["first_pass_yield"] == pytest.approx(9 / 12)
    assert body["ppm"] == pytest.approx(250_000)
    assert {p["label"]: p["count"] for p in body["pareto"]} == {"anomaly": 2, "chip": 1}
    assert body["status"] == "open" and body["lot"] == "LOT-R" and body["reinspected_parts"] == 1
    assert body["per_hour"] and body["per_shift"] and body["models"][0]["model_name"] == "bright-spot"

    pending = client.get(f"/api/v1/batches/{batch['id']}/report.pdf")
    assert pending.status_code == 404 and "still open" in pending.json()["error"]["message"]
    assert client.post(f"/api/v1/batches/{batch['id']}/close", headers=operator_headers).status_code == 200
    station.inspection.archive.write_later([]).result()  # type: ignore[union-attr]  # images on disk

    pdf = wait_for(client, f"/api/v1/batches/{batch['id']}/report.pdf")
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")
    report_csv = client.get(f"/api/v1/batches/{batch['id']}/report.csv")
    assert report_csv.status_code == 200 and report_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(report_csv.text)))
    closed = client.get(f"/api/v1/batches/{batch['id']}/summary").json()
    figures = {r["name"]: r["value"] for r in rows if r["section"] == "figures"}
    for name in ("parts", "ok", "ng", "invalid", "inspections", "overrides", "first_pass_ok"):
        assert int(figures[name]) == closed[name], name
    for name in ("yield", "first_pass_yield", "ppm"):
        assert float(figures[name]) == closed[name], name
    assert {r["name"]: int(r["value"]) for r in rows if r["section"] == "pareto"} == \
        {p["label"]: p["count"] for p in closed["pareto"]}
    hours = {(r["period"], r["name"]): r["value"] for r in rows if r["section"] == "hour"}
    for hour in closed["per_hour"]:
        assert int(hours[(hour["period"], "parts")]) == hour["parts"]
    # files are named by the batch id alone, in the data folder
    assert sorted(p.name for p in (station.config.data_dir / "reports").iterdir()) == \
        [f"batch-{batch['id']}.csv", f"batch-{batch['id']}.pdf"]
    if shutil.which("pdftoppm"):
        folder = station.config.data_dir / "render"
        folder.mkdir()
        (folder / "r.pdf").write_bytes(pdf.content)
        subprocess.run(["pdftoppm", "-png", "-r", "50", str(folder / "r.pdf"), str(folder / "page")], check=True)
        assert list(folder.glob("page*.png"))


def test_current_summary_spc_and_drift(client: TestClient, station: Station) -> None:
    assert station.store is not None
    for n in range(40):
        station.store.record(PartContext(station.id, "test", serial=f"X{n}"),
                             [NewVerdict("vision", "OK", "good", 0.2 + 0.001 * (n % 5), 0.5, "bright-spot", 1,
                                         1.0)]).result()
    current = client.get("/api/v1/summary/current")
    assert current.status_code == 200
    assert current.json()["status"] == "window" and current.json()["parts"] == 40
    spc = client.get("/api/v1/spc", params={"points": 10})
    assert spc.status_code == 200, spc.text
    body = spc.json()
    assert body["batch_id"] == 0 and body["rules"]["1"]
    chart = body["scores"][0]
    assert chart["total_points"] == 40 and len(chart["points"]) == 10
    assert chart["limits"]["ucl"] > chart["limits"]["center"] > chart["limits"]["lcl"]
    assert chart["capability"]["cp"] is None and chart["capability"]["cpk"] > 0
    drift = client.get("/api/v1/spc/model-drift")
    assert drift.status_code == 200
    assert drift.json()[0]["model_name"] == "bright-spot" and drift.json()[0]["good_parts"] == 40


def test_openapi_documents_the_summary(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    route = schema["paths"]["/api/v1/batches/{batch_id}/summary"]["get"]
    assert route["x-required-scope"] == "qms:read"
    fields = schema["components"]["schemas"]["SummaryOut"]["properties"]
    for name in ("parts", "ok", "ng", "invalid", "yield", "first_pass_yield", "ppm", "pareto"):
        assert name in fields and ("description" in fields[name] or "$ref" in str(fields[name])), name
    assert fields["yield"]["description"] and fields["ppm"]["examples"]


def test_reports_dir_never_named_by_a_client(tmp_path: Path) -> None:
    from edge.quality.reports import report_path
    assert report_path(tmp_path, 7, "pdf") == tmp_path / "reports" / "batch-7.pdf"


def test_a_report_that_cannot_be_written_is_a_clear_404(client: TestClient, operator_headers: dict[str, str],
                                                        station: Station) -> None:
    (station.config.data_dir / "reports").write_text("not a folder")  # the report files cannot be created
    batch = client.post("/api/v1/batches", json={"lot": "LOT-X"}, headers=operator_headers).json()
    judge(client, "SN-X", spot=True)
    assert client.post(f"/api/v1/batches/{batch['id']}/close", headers=operator_headers).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        response = client.get(f"/api/v1/batches/{batch['id']}/report.csv")
        message = response.json()["error"]["message"]
        if "could not be written" in message or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 404 and "could not be written" in message, message
    assert client.get(f"/api/v1/batches/{batch['id']}/summary").json()["parts"] == 1


def test_the_route_answers_the_python_api_s_record(client: TestClient, operator_headers: dict[str, str],
                                                   station: Station) -> None:
    from edge.quality import batch_summary, summary_record
    assert station.store is not None
    batch = client.post("/api/v1/batches", json={"lot": "LOT-S"}, headers=operator_headers).json()
    judge(client, "S-1", spot=True)
    judge(client, "S-2", spot=False)
    body = client.get(f"/api/v1/batches/{batch['id']}/summary").json()
    record = summary_record(batch_summary(station.store.reader(), batch["id"]))
    body.pop("generated_at")
    record.pop("generated_at")
    assert body == record
