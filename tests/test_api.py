"""The HTTP API in-process (TestClient): judging, reading back, and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from modelkit import dark_part
from PIL import Image
from support import encode, jpeg, pil_bytes, write_station_config

from edge.config import load_config
from edge.station import Station
from edge.store import VerdictStore
from edge.store.signing import StationKey, verify_signature

VISION = "/api/v1/verdicts/vision"


def verdict_count(station: Station) -> int:
    assert station.store is not None
    return station.store.counts()["verdicts"]


def test_multipart_upload_is_judged_stored_and_read_back(client: TestClient, station: Station) -> None:
    response = client.post(VISION, files={"image": ("part.jpg", jpeg(spot=True), "image/jpeg")},
                           data={"serial": "SN-1", "batch": "LOT-7"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "NG" and body["label"] == "defect"
    assert body["score"] >= body["threshold"] == 0.5
    assert body["model"] == {"name": "bright-spot", "version": 1}
    assert body["serial"] == "SN-1" and body["latency_ms"] > 0
    region = body["defect_region"]
    assert region["x"] >= 0.5 and region["y"] >= 0.5, "the spot is in the lower right"

    record = client.get(f"/api/v1/verdicts/{body['id']}").json()
    assert record["lot"] == "LOT-7" and record["serial"] == "SN-1" and record["station"] == "test-station"
    assert record["decision"] == "NG" and record["model_name"] == "bright-spot" and record["model_version"] == 1
    image = client.get(f"/api/v1/verdicts/{body['id']}/image")
    assert image.status_code == 200 and image.content == jpeg(spot=True)
    heatmap = client.get(f"/api/v1/verdicts/{body['id']}/heatmap")
    assert heatmap.headers["content-type"] == "image/png"
    part = Image.open(io.BytesIO(jpeg(spot=True)))
    assert Image.open(io.BytesIO(heatmap.content)).size == part.size, "the heat map lies over the part as it is"


def test_raw_body_in_every_accepted_format(client: TestClient) -> None:
    grey = dark_part()
    colour = np.dstack([grey, grey, grey])
    uploads = {
        "image/jpeg": encode(grey, ".jpg"), "image/png": encode(colour, ".png"),
        "image/bmp": encode(grey, ".bmp"), "image/tiff": encode(colour, ".tiff"),
        "application/octet-stream": encode(grey, ".png"),
    }
    for content_type, data in uploads.items():
        response = client.post(VISION, content=data, headers={"content-type": content_type})
        assert response.status_code == 200, (content_type, response.text)
        assert response.json()["decision"] == "OK"


@pytest.mark.parametrize("spot", [False, True])
def test_camera_and_export_pixel_formats_are_judged_like_8_bit(client: TestClient, spot: bool) -> None:
    """12-bit camera pixels in a 16-bit PNG, full-range 16-bit TIFF, RGBA PNG with transparency."""
    grey = dark_part(spot=spot)
    alpha = np.full_like(grey, 128)
    uploads = {
        "12-bit png": pil_bytes(Image.fromarray(grey.astype(np.uint16) * 16), "PNG"),
        "16-bit tiff": pil_bytes(Image.fromarray(grey.astype(np.uint16) * 257), "TIFF"),
        "rgba png": pil_bytes(Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA"), "PNG"),
    }
    expected = client.post(VISION, content=encode(grey, ".png"), headers={"content-type": "image/png"}).json()
    for kind, data in uploads.items():
        response = client.post(VISION, content=data, headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200, (kind, response.text)
        body = response.json()
        assert body["decision"] == expected["decision"] == ("NG" if spot else "OK"), kind
        assert body["score"] == pytest.approx(expected["score"], abs=0.02), kind


def test_ok_part_gets_generated_serial_and_no_region(client: TestClient, station: Station) -> None:
    body = client.post(VISION, content=jpeg(), headers={"content-type": "image/jpeg"}).json()
    assert body["decision"] == "OK" and body["defect_region"] is None
    assert body["serial"].startswith("test-station-")
    image = client.get(f"/api/v1/verdicts/{body['id']}/image")  # a recent OK image: served from memory
    assert image.status_code == 200 and image.content == jpeg() and image.headers["content-type"] == "image/jpeg"
    assert not list((station.config.data_dir / "images").rglob("*.*")), "an OK image is not written"
    assert client.get(f"/api/v1/verdicts/{body['id']}/heatmap").status_code == 404


def truncated_jpeg() -> bytes:
    data = jpeg(spot=True)
    return data[: len(data) // 2]


BAD_INPUTS = [
    pytest.param(b"", "image/jpeg", 400, "empty", id="empty body"),
    pytest.param(b"this is not an image at all", "application/octet-stream", 400, "not_an_image", id="not an image"),
    pytest.param(truncated_jpeg(), "image/jpeg", 400, "corrupt", id="truncated jpeg"),
    pytest.param(pil_bytes(Image.fromarray(np.full((64, 64), 0.5, np.float32)), "TIFF"), "image/tiff", 400,
                 "unsupported_pixel_format", id="float tiff"),
    pytest.param(pil_bytes(Image.new("RGB", (64, 64)), "GIF"), "image/gif", 415, "unsupported_media_type",
                 id="gif content type"),
    pytest.param(pil_bytes(Image.new("RGB", (64, 64)), "GIF"), "application/octet-stream", 415,
                 "unsupported_format", id="gif bytes"),
    pytest.param(b'{"image": "x"}', "application/json", 415, "unsupported_media_type", id="json body"),
    pytest.param(b"x" * (1024 * 1024 + 1), "image/jpeg", 413, "too_large", id="over the size limit"),
]


@pytest.mark.parametrize(("data", "content_type", "status", "code"), BAD_INPUTS)
def test_bad_input_is_refused_clearly_and_stores_nothing(client: TestClient, station: Station, data: bytes,
                                                         content_type: str, status: int, code: str) -> None:
    before = verdict_count(station)
    response = client.post(VISION, content=data, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and len(error["message"]) > 10
    assert verdict_count(station) == before
    # and the service keeps serving
    assert client.post(VISION, content=jpeg(), headers={"content-type": "image/jpeg"}).status_code == 200


def test_bad_multipart_requests(client: TestClient, station: Station) -> None:
    before = verdict_count(station)
    missing = client.post(VISION, files={"picture": ("p.jpg", jpeg(), "image/jpeg")})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_image"
    broken = client.post(VISION, content=b"--xyz\r\ngarbage",
                         headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert broken.status_code == 400
    too_big = client.post(VISION, files={"image": ("p.jpg", b"x" * (1024 * 1024 + 10), "image/jpeg")})
    assert too_big.status_code == 413
    assert verdict_count(station) == before


def test_unknown_model_and_malformed_fields(client: TestClient, station: Station) -> None:
    before = verdict_count(station)
    unknown = client.post(f"{VISION}?model=no-such-model", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_model" and "bright-spot" in unknown.json()["error"]["message"]
    bad_serial = client.post(f"{VISION}?serial=has%20spaces%20%3B%20drop", content=jpeg(),
                             headers={"content-type": "image/jpeg"})
    assert bad_serial.status_code == 422 and bad_serial.json()["error"]["code"] == "invalid_request"
    assert verdict_count(station) == before


def test_image_over_pixel_limit_is_refused(client: TestClient, station: Station) -> None:
    station.inspection.max_pixels = 100 * 100  # type: ignore[union-attr]
    response = client.post(VISION, content=encode(dark_part(size=(200, 200)), ".png"),
                           headers={"content-type": "image/png"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_large"


def test_verdict_paging_is_stable_and_complete(client: TestClient) -> None:
    ids = [client.post(VISION, content=jpeg(seed=i), headers={"content-type": "image/jpeg"}).json()["id"]
           for i in range(7)]
    seen: list[int] = []
    cursor = 0
    while True:
        page = client.get(f"/api/v1/verdicts?since={cursor}&limit=3").json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert seen == sorted(ids)
    assert client.get(f"/api/v1/verdicts?since={cursor}").json() == {"items": [], "next_cursor": cursor,
                                                                       "has_more": False}
    assert client.get("/api/v1/verdicts?limit=0").status_code == 422
    assert client.get("/api/v1/verdicts/999999").status_code == 404


def test_a_decision_made_meanwhile_is_not_overwritten(client: TestClient, operator_headers: dict[str, str]) -> None:
    """Two operators look at the same NG part; the first confirms it, the second's override (sent with the
    override id it saw) is refused with 409 and records nothing."""
    verdict = client.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"}).json()
    path = f"/api/v1/verdicts/{verdict['id']}/override"
    seen = client.get(f"/api/v1/verdicts/{verdict['id']}").json()
    assert seen["override_id"] is None
    first = client.post(path, json={"decision": "NG", "expected_override": 0}, headers=operator_headers)
    assert first.status_code == 200
    second = client.post(path, json={"decision": "OK", "reason": "looks fine", "expected_override": 0},
                         headers=operator_headers)
    assert second.status_code == 409 and "meanwhile" in second.json()["error"]["message"]
    latest = client.get(f"/api/v1/verdicts/{verdict['id']}").json()
    assert latest["override_decision"] == "NG" and latest["override_id"] == first.json()["id"]
    again = client.post(path, json={"decision": "OK", "expected_override": latest["override_id"]},
                        headers=operator_headers)
    assert again.status_code == 200, "with the override it saw, the operator's decision is recorded"
    overrides = client.get(f"/api/v1/overrides?verdict={verdict['id']}").json()["items"]
    assert [o["decision"] for o in overrides] == ["NG", "OK"]

def test_override_batches_alarms_and_audit_record_the_authenticated_actor(
        client: TestClient, station: Station, operator_headers: dict[str, str]) -> None:
    """Operator changes need a credential; the recorded actor is the token's identity, never a body field."""
    assert client.post("/api/v1/batches", json={"lot": "L-42"}).status_code == 401
    forged = client.post("/api/v1/batches", json={"lot": "L-42", "operator": "ann"}, headers=operator_headers)
    assert forged.status_code == 422, "an 'operator' field is not accepted any more"
    batch = client.post("/api/v1/batches", json={"lot": "L-42", "product": "tile-A"}, headers=operator_headers)
    assert batch.status_code == 201 and batch.json()["operator"] == "token:test-operator"
    batch_id = batch.json()["id"]
    again = client.post("/api/v1/batches", json={"lot": "L-43"}, headers=operator_headers)
    assert again.status_code == 409 and "still open" in again.json()["error"]["message"]
    verdict = client.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"}).json()
    assert verdict["batch_id"] == batch_id, "parts go into the station's open batch"
    path = f"/api/v1/verdicts/{verdict['id']}/override"
    assert client.post(path, json={"decision": "OK"}).status_code == 401
    override = client.post(path, json={"decision": "OK", "reason": "dust, wiped"}, headers=operator_headers)
    assert override.status_code == 200 and override.json()["operator"] == "token:test-operator"
    record = client.get(f"/api/v1/verdicts/{verdict['id']}").json()
    assert record["decision"] == "NG", "the acknowledged verdict itself never changes"
    assert record["override_decision"] == "OK" and record["override_operator"] == "token:test-operator"
    assert client.post("/api/v1/verdicts/999999/override", json={"decision": "OK"},
                       headers=operator_headers).status_code == 404
    assert client.post(path, json={"decision": "MAYBE"}, headers=operator_headers).status_code == 422
    closed = client.post(f"/api/v1/batches/{batch_id}/close", headers=operator_headers)
    assert closed.status_code == 200 and closed.json()["closed_by"] == "token:test-operator"
    assert client.post(f"/api/v1/batches/{batch_id}/close", headers=operator_headers).status_code == 409
    assert client.post("/api/v1/batches/99999/close", headers=operator_headers).status_code == 404

    assert station.store is not None
    alarm_id = station.store.raise_alarm("camera_lost", "camera 1 stopped sending frames", "critical").result()
    assert [a["id"] for a in client.get("/api/v1/alarms?active_only=true").json()] == [alarm_id]
    acked = client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=operator_headers).json()
    assert acked["acknowledged_by"] == "token:test-operator"
    assert client.get("/api/v1/alarms?active_only=true").json() == []
    trail = client.get("/api/v1/audit?limit=1000").json()["items"]
    by_action = {entry["action"]: entry for entry in trail}
    assert {"batch_opened", "verdict_overridden", "batch_closed", "alarm_raised", "alarm_acknowledged",
            "token_created", "config_applied"} <= set(by_action)
    assert by_action["verdict_overridden"]["before"] == {"decision": "NG", "label": "defect"}
    assert by_action["verdict_overridden"]["after"]["decision"] == "OK"
    assert by_action["batch_closed"]["actor"] == "token:test-operator"
    assert [e["id"] for e in trail] == sorted(e["id"] for e in trail)
    assert [e["at"] for e in trail] == sorted(e["at"] for e in trail), "id order is time order"


def test_a_lot_given_with_one_part_stays_with_that_part(client: TestClient, station: Station) -> None:
    """Posting one image with ?batch=LOT-7 must not move later parts of the station into LOT-7."""
    tagged = client.post(f"{VISION}?batch=LOT-7&serial=A1", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert tagged.status_code == 200 and tagged.json()["batch_id"] is None
    assert client.get(f"/api/v1/verdicts/{tagged.json()['id']}").json()["lot"] == "LOT-7"
    later = client.post(VISION, content=jpeg(), headers={"content-type": "image/jpeg"}).json()
    assert client.get(f"/api/v1/verdicts/{later['id']}").json()["lot"] is None
    assert client.get("/api/v1/batches").json() == [], "no batch was opened by a judged part"


def test_out_of_range_ids_and_wrong_kind_models_are_4xx_never_500(
        client: TestClient, operator_headers: dict[str, str]) -> None:
    huge = 272592551830446583138658192688632823808
    for path in (f"/api/v1/verdicts/{huge}", f"/api/v1/verdicts/{huge}/image", f"/api/v1/batches/{huge}",
                 f"/api/v1/verdicts/{-1}"):
        response = client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/api/v1/verdicts?since=380515429078716055552").json()["items"] == []
    assert client.get(f"/api/v1/audit?since={huge}").json()["items"] == []
    for path in (f"/api/v1/verdicts/{huge}/override", f"/api/v1/batches/{huge}/close", f"/api/v1/alarms/{huge}/ack"):
        body = {"decision": "OK"} if "override" in path else None
        response = client.post(path, json=body, headers=operator_headers)
        assert response.status_code == 404, (path, response.text)


def test_health_models_metrics_and_openapi(client: TestClient) -> None:
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ready"
    assert health.json()["checks"]["models"] == {"bright-spot": 1}
    assert client.get("/api/v1/models").json()[0]["name"] == "bright-spot"
    client.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"})
    client.post(VISION, content=b"", headers={"content-type": "image/jpeg"})
    text = client.get("/metrics").text
    assert 'edge_verdicts_total{decision="NG",modality="vision",model="bright-spot"} 1.0' in text
    assert 'edge_rejected_inputs_total{reason="empty"} 1.0' in text
    assert 'edge_http_requests_total{method="POST",route="/api/v1/verdicts/vision",status="200"} 1.0' in text
    assert "edge_verdict_latency_seconds_bucket" in text
    assert "/api/v1/verdicts/vision" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_health_is_not_ready_when_the_store_is_stopped(client: TestClient, station: Station) -> None:
    assert station.store is not None
    station.store.writer.stop()
    health = client.get("/api/v1/health")
    assert health.status_code == 503 and health.json()["checks"]["store_writable"] is False
    response = client.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "store_unavailable"


def test_images_too_small_for_the_model_are_invalid_not_ng(client: TestClient, station: Station) -> None:
    """A 6x6 thumbnail of a spotted part or a one-pixel line scaled up to the input would score as
    anything; the test model records no training sizes, so the bound is an eighth of its 64 px input."""
    thumbnail = dark_part(size=(6, 6), spot=True)
    line = dark_part(size=(1, 200), seed=2)
    for pixels in (thumbnail, line):
        response = client.post(VISION, content=encode(pixels, ".png"), headers={"content-type": "image/png"})
        body = response.json()
        assert response.status_code == 200 and body["decision"] == "INVALID" and body["score"] is None
        assert f"{pixels.shape[1]}x{pixels.shape[0]} px" in body["reason"] and "at least 8x8 px" in body["reason"]
        assert client.get(f"/api/v1/verdicts/{body['id']}").json()["decision"] == "INVALID"
    eight = client.post(VISION, content=encode(dark_part(size=(8, 8)), ".png"), headers={"content-type": "image/png"})
    assert eight.json()["decision"] == "OK"


def test_frames_unfit_to_judge_get_invalid_with_reason_never_ok_or_ng(client: TestClient, station: Station) -> None:
    blank = np.full((120, 160), 128, np.uint8)
    dark = (dark_part() // 8).astype(np.uint8)
    for pixels, words in ((blank, "blank"), (dark, "under-exposed")):
        response = client.post(VISION, content=encode(pixels, ".png"), headers={"content-type": "image/png"})
        assert response.status_code == 200
        body = response.json()
        assert body["decision"] == "INVALID" and words in body["reason"] and body["score"] is None
        record = client.get(f"/api/v1/verdicts/{body['id']}").json()
        assert record["decision"] == "INVALID" and words in record["reason"]
        assert record["details"]["quality"]["problem"] == body["reason"]


def test_chain_head_is_signed_by_the_station_key_and_stable_across_restarts(client: TestClient,
                                                                             station: Station) -> None:
    client.post(VISION, content=jpeg(spot=True), headers={"content-type": "image/jpeg"})
    head = client.get("/api/v1/audit/head").json()
    assert head["verdicts"]["id"] == 1 and len(head["verdicts"]["hash"]) == 64
    assert client.get("/api/v1/verdicts/1").json()["hash"] == head["verdicts"]["hash"]
    assert verify_signature(head["public_key"], head["signed"], head["signature"])
    assert not verify_signature(head["public_key"], head["signed"].replace("verdicts=1", "verdicts=2"),
                                head["signature"])
    key_file = station.config.data_dir / "station-key.pem"
    assert key_file.stat().st_mode & 0o077 == 0, "the private key is readable by the service user only"
    assert StationKey.load_or_create(station.config.data_dir).public_hex == head["public_key"]


def test_a_changed_station_file_is_audited_at_start(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    for models in ({"threads": 1, "vision": "bright-spot"}, {"threads": 1, "vision": "bright-spot"},
                   {"threads": 2, "vision": "bright-spot"}):
        station = Station(load_config(write_station_config(tmp_path, models=models)))
        station.start(with_sources=False)
        station.stop()
    assert config.is_file()
    store = VerdictStore(load_config(config).database_path)
    applied = [e for e in reversed(store.audit_log()) if e.action == "config_applied"]
    store.close()
    assert len(applied) == 2, "an unchanged file is not audited again"
    assert applied[0].before is None and applied[1].details == {"file": str(config.resolve()),
                                                                "changed_sections": ["models"]}
    assert applied[1].before["models"]["threads"] == 1 and applied[1].after["models"]["threads"] == 2  # type: ignore[index]
