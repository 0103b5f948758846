"""The maintenance workbench through the API of a real station: samples from overrides and the sampler,
labels audited, a real small retraining job (progress, completion, cancel), compare, threshold curve,
promote and roll back with the running station swapping models, camera set-up refusals."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from modelkit import dark_part
from support import bearer, encode, free_port, write_station_config

from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station

MODEL = "bright-spot"  # score: the brightest 8x8 cell (0..1); threshold 0.5


def part(level: int | None = None, seed: int = 0) -> bytes:
    """A dark part; with ``level``, a 48x48 patch of that grey (score about level / 255)."""
    pixels = dark_part(size=(120, 160), seed=seed)
    if level is not None:
        pixels[30:78, 40:88] = level
    return encode(pixels, ".png")


def start(tmp_path: Path, **overrides: Any) -> Station:
    station = Station(load_config(write_station_config(tmp_path, **overrides)))
    station.start(with_sources=False)
    return station


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[tuple[Station, TestClient, dict[str, str], dict[str, str]]]:
    """A station keeping every image (so confirmed good parts have one), the sampler off; a maintenance and a
    read-only token."""
    station = start(tmp_path, storage={"data_dir": str(tmp_path / "data"), "save_images": "all", "min_free_mb": 10},
                    workbench={"sample_band": 0.0}, training={"priority": "low"})  # idle starves on a busy host
    with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
        yield (station, client, bearer(station, "tech", ["maintenance"]), bearer(station, "viewer", ["qms:read"]))
    station.stop()


def judge(client: TestClient, _: dict[str, str], image: bytes) -> dict[str, Any]:
    """Judged as the line would (judging needs no login on loopback)."""
    answer = client.post("/api/v1/verdicts/vision", files={"image": ("p.png", image, "image/png")})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def decide(client: TestClient, headers: dict[str, str], verdict_id: int, decision: str,
           label: str | None = None) -> None:
    answer = client.post(f"/api/v1/verdicts/{verdict_id}/override", headers=headers,
                         json={"decision": decision, "label": label, "reason": "looked at it"})
    assert answer.status_code == 200, answer.text


def collect(client: TestClient, headers: dict[str, str], good: int, spots: int) -> None:
    """Confirm ``good`` good parts and ``spots`` spot defects: each becomes a labelled sample."""
    for seed in range(good):
        decide(client, headers, judge(client, headers, part(seed=seed))["id"], "OK")
    for seed in range(spots):
        decide(client, headers, judge(client, headers, part(240, seed=100 + seed))["id"], "NG", "spot")


def audit(station: Station, action: str) -> list[Any]:
    assert station.store is not None
    return [e for e in station.store.audit_log(1000) if e.action == action]


def test_overrides_become_samples_and_labels_are_audited(bench: tuple[Station, TestClient, dict[str, str],
                                                                      dict[str, str]]) -> None:
    station, client, tech, viewer = bench
    ok = judge(client, tech, part(seed=1))
    missed = judge(client, tech, part(seed=2))
    decide(client, tech, ok["id"], "OK")  # a confirmation
    decide(client, tech, missed["id"], "NG", "scratch")  # the model passed a scratched part
    listed = client.get("/api/v1/samples", headers=viewer).json()
    by_verdict = {s["verdict_id"]: s for s in listed["samples"]}
    assert by_verdict[ok["id"]]["label"] == "good" and by_verdict[ok["id"]]["origin"] == "override"
    assert by_verdict[missed["id"]]["label"] == "scratch" and by_verdict[missed["id"]]["state"] == "labelled"
    assert by_verdict[ok["id"]]["image_url"] == f"/api/v1/verdicts/{ok['id']}/image"
    assert client.get(by_verdict[ok["id"]]["image_url"], headers=viewer).status_code == 200
    assert listed["counts"]["usable"] == {"good": 1, "scratch": 1}

    sample = by_verdict[missed["id"]]["id"]
    relabelled = client.post(f"/api/v1/samples/{sample}", json={"label": "dent"}, headers=tech)
    assert relabelled.status_code == 200 and relabelled.json()["label"] == "dent"
    entry = audit(station, "sample_labelled")[0]
    assert entry.actor == "token:tech" and entry.before == {"label": "scratch", "excluded": False}
    assert entry.after == {"label": "dent", "excluded": False}
    excluded = client.post(f"/api/v1/samples/{sample}", json={"excluded": True, "reason": "blurred"}, headers=tech)
    assert excluded.json()["state"] == "excluded"
    assert audit(station, "sample_excluded")[0].after == {"label": "dent", "excluded": True}
    assert [s["id"] for s in client.get("/api/v1/samples?state=excluded", headers=tech).json()["samples"]] == [sample]
    assert client.get("/api/v1/samples?label=good", headers=tech).json()["samples"][0]["verdict_id"] == ok["id"]

    # a second decision on the same part relabels its one sample
    decide(client, tech, ok["id"], "NG", "crack")
    again = client.get("/api/v1/samples?label=crack", headers=tech).json()["samples"]
    assert [s["verdict_id"] for s in again] == [ok["id"]] and client.get(
        "/api/v1/samples", headers=tech).json()["counts"]["total"] == 2

    # refusals: a read-only identity, a label that cannot name a class, a sample that does not exist
    assert client.post(f"/api/v1/samples/{sample}", json={"label": "x"}, headers=viewer).status_code == 403
    bad = client.post(f"/api/v1/samples/{sample}", json={"label": "../etc"}, headers=tech)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert client.post("/api/v1/samples/999", json={"label": "good"}, headers=tech).status_code == 404
    assert client.post(f"/api/v1/samples/{sample}", json={}, headers=tech).status_code == 422


def test_the_sampler_keeps_near_threshold_parts_with_their_image_rate_limited(tmp_path: Path) -> None:
    station = start(tmp_path, workbench={"sample_band": 0.2, "samples_per_hour": 2})  # images: NG only
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            tech = bearer(station, "tech", ["maintenance"])
            far = judge(client, tech, part(seed=1))
            near = [judge(client, tech, part(110 + i, seed=10 + i)) for i in range(4)]  # scores about 0.43-0.45
            assert all(v["decision"] == "OK" and abs(v["score"] - 0.5) <= 0.1 for v in near), near
            samples = client.get("/api/v1/samples?state=unlabelled", headers=tech).json()["samples"]
            assert sorted(s["verdict_id"] for s in samples) == [near[0]["id"], near[1]["id"]], "two an hour"
            assert all(s["origin"] == "sampler" and s["has_image"] for s in samples)
            assert station.store is not None
            for s in samples:  # an OK part's image, kept for good (not only through the archive's grace period)
                assert client.get(s["image_url"], headers=tech).status_code == 200
                verdict = station.store.verdict(s["verdict_id"])
                assert verdict is not None and verdict.image_ref and ".grace" not in verdict.image_ref
            everything = client.get("/api/v1/samples", headers=tech).json()["samples"]
            assert far["id"] not in {s["verdict_id"] for s in everything}, "a part far from the threshold is no sample"
    finally:
        station.stop()


def test_too_few_samples_is_a_clear_refusal(bench: tuple[Station, TestClient, dict[str, str],
                                                          dict[str, str]]) -> None:
    _, client, tech, viewer = bench
    collect(client, tech, good=5, spots=0)
    refused = client.post("/api/v1/training-jobs", json={"mode": "good-only"}, headers=tech)
    assert refused.status_code == 422, refused.text
    assert "needs at least 8 good parts, have 4" in refused.json()["error"]["message"]  # one of 5 held back
    labelled = client.post("/api/v1/training-jobs", json={"mode": "labelled"}, headers=tech)
    assert labelled.status_code == 422 and "labelled defect samples" in labelled.json()["error"]["message"]
    assert client.post("/api/v1/training-jobs", json={}, headers=viewer).status_code == 403
    assert client.post("/api/v1/training-jobs", json={"model": "no-such"}, headers=tech).status_code == 404
    assert client.get("/api/v1/training-jobs", headers=viewer).json() == []


def wait_for(client: TestClient, headers: dict[str, str], job_id: int, states: set[str],
             timeout_s: float = 240.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/training-jobs/{job_id}", headers=headers).json()
        seen.append(job)
        if job["state"] in states:
            return job, seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout_s} s")


def test_retrain_compare_set_threshold_promote_and_roll_back(bench: tuple[Station, TestClient, dict[str, str],
                                                                          dict[str, str]]) -> None:
    station, client, tech, viewer = bench
    assert station.models is not None
    collect(client, tech, good=14, spots=4)  # held back: 3 good, 1 spot

    cancelled = client.post("/api/v1/training-jobs", json={"mode": "good-only"}, headers=tech).json()
    assert cancelled["state"] in ("queued", "running") and cancelled["held_out"] == {"good": 3, "spot": 1}
    assert cancelled["trained_on"] == {"good": 11} and cancelled["base_version"] == 1
    busy = client.post("/api/v1/training-jobs", json={"mode": "good-only"}, headers=tech)
    assert busy.status_code == 409, "one job at a time"
    stopped = client.post(f"/api/v1/training-jobs/{cancelled['id']}/cancel", headers=tech).json()
    assert stopped["state"] == "cancelled" and stopped["candidate_version"] is None
    assert [v.version for v in station.models.registry.versions(MODEL)] == [1], "nothing registered"
    assert audit(station, "training_cancelled")[0].actor == "token:tech"

    job = client.post("/api/v1/training-jobs", json={"mode": "good-only"}, headers=tech).json()
    done, seen = wait_for(client, viewer, job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded", done
    assert any(0 < s["fraction"] < 1 and s["stage"] and s["state"] == "running" for s in seen), "progress shown"
    assert any(s["eta_s"] is not None for s in seen), "with an estimate of the time left"
    assert done["candidate_version"] == 2 and done["fraction"] == 1.0
    assert station.models.registry.active_version(MODEL) == 1, "a candidate is never promoted"
    assert station.models.loaded()[MODEL].version == 1

    compared = client.get(f"/api/v1/training-jobs/{job['id']}/compare", headers=tech)
    assert compared.status_code == 200, compared.text
    report = compared.json()
    assert report["running_version"] == 1 and report["candidate_version"] == 2
    assert report["held_out"] == {"good": 3, "spot": 1}
    running, candidate = report["versions"]
    for version in (running, candidate):
        histogram = version["histogram"]
        assert sum(histogram["good"]) == 3 and sum(histogram["defect"]) == 1
        assert len(histogram["edges"]) == len(histogram["good"]) + 1 and histogram["threshold"] == version["threshold"]
        assert set(version["misses_by_label"]) == {"spot"} and version["judged_files"] == 4
        rates = [(p["false_reject_rate"], p["miss_rate"]) for p in version["curve"]]
        assert rates[0][0] == 1.0 and rates[-1][0] <= 1 / 3, "false rejects fall as the threshold rises"
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(rates)), "misses only rise"
    assert running["false_rejects"] == 0 and running["misses_by_label"] == {"spot": 0}
    assert all(d["verdict_id"] is not None for d in report["disagreements"])
    assert client.get(f"/api/v1/training-jobs/{job['id']}/compare", headers=viewer).status_code == 403

    # the slider's threshold: a new version with the same model, not active (the candidate was not)
    highest_good = max(p["threshold"] for p in candidate["curve"] if p["false_reject_rate"] > 0)
    chosen = highest_good * 1.01
    set_answer = client.post(f"/api/v1/models/{MODEL}/threshold", headers=tech,
                             json={"version": 2, "threshold": chosen, "job_id": job["id"]})
    assert set_answer.status_code == 200, set_answer.text
    assert set_answer.json()["registered_version"] == 3 and set_answer.json()["active"] is False
    calibrated = audit(station, "model_calibrated")[0]
    assert calibrated.actor == "token:tech" and calibrated.after["threshold"] == chosen
    assert calibrated.details["held_out_rates"]["false_reject_rate"] == 0.0
    assert station.models.registry.manifest(MODEL, 3).threshold == chosen

    promoted = client.post(f"/api/v1/models/{MODEL}/promote", json={"version": 3}, headers=tech)
    assert promoted.status_code == 200 and promoted.json()["running_version"] == 3, promoted.text
    assert station.models.loaded()[MODEL].version == 3, "swapped without a restart"
    assert judge(client, tech, part(seed=77))["model"]["version"] == 3
    assert audit(station, "model_promoted")[0].after == {"active_version": 3}
    back = client.post(f"/api/v1/models/{MODEL}/rollback", headers=tech)
    assert back.status_code == 200 and back.json()["running_version"] == 1
    assert audit(station, "model_rolled_back")[0].actor == "token:tech"
    assert client.post(f"/api/v1/models/{MODEL}/rollback", headers=tech).status_code == 409, "nothing earlier"
    assert client.post(f"/api/v1/models/{MODEL}/promote", json={"version": 99}, headers=tech).status_code == 404
    assert client.get("/api/v1/models/no-such/versions", headers=viewer).status_code == 404
    assert [v["version"] for v in client.get(f"/api/v1/models/{MODEL}/versions", headers=viewer).json()["versions"]] \
        == [1, 2, 3]
    assert client.post(f"/api/v1/models/{MODEL}/promote", json={"version": 2}, headers=viewer).status_code == 403


def test_a_restart_marks_a_running_job_interrupted(tmp_path: Path) -> None:
    station = start(tmp_path)
    assert station.store is not None
    station.store.submit(lambda conn: conn.execute(
        "INSERT INTO training_jobs (model_name, mode, state, requested_by, created_at, trained_on, held_out)"
        " VALUES ('bright-spot', 'good-only', 'running', 'user:tech', '2026-12-05T10:00:00', '{}', '{}')")).result()
    station.stop()
    station = start(tmp_path)
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            job = client.get("/api/v1/training-jobs/1", headers=bearer(station, "v", ["qms:read"])).json()
        assert job["state"] == "interrupted" and "nothing was registered" in job["error"]
        assert audit(station, "training_interrupted")[0].actor == "system"
    finally:
        station.stop()


def test_camera_set_up_says_when_there_is_no_camera(bench: tuple[Station, TestClient, dict[str, str],
                                                                 dict[str, str]]) -> None:
    _, client, tech, _ = bench
    status = client.get("/api/v1/camera", headers=tech).json()
    assert status["available"] is False and "no line camera" in status["reason"]
    refused = client.post("/api/v1/camera/settings", json={"exposure_us": 5000}, headers=tech)
    assert refused.status_code == 409 and "no line camera" in refused.json()["error"]["message"]
    assert client.get("/api/v1/camera/frame", headers=tech).status_code == 409


def test_camera_set_up_on_the_emulated_basler_line(tmp_path: Path) -> None:
    """pypylon's emulated camera on a line: refused while the line runs; once stopped, a JPEG preview,
    its sharpness and quality verdict, and exposure and gain set through the camera, audited."""
    pytest.importorskip("pypylon", reason="the camera extra (pypylon) is not installed")
    from test_line import line_config, part_images

    station = Station(load_config(line_config(tmp_path, part_images(tmp_path / "frames"), free_port())))
    station.start()
    try:
        with TestClient(create_app(station), base_url="http://127.0.0.1") as client:
            tech = bearer(station, "tech", ["maintenance"])
            status = client.get("/api/v1/camera", headers=tech).json()
            assert status["available"] and status["adjustable"] and status["line_stopped"] is False
            running = client.get("/api/v1/camera/frame", headers=tech)
            assert running.status_code == 409 and "stop the line first" in running.json()["error"]["message"]
            assert client.post("/api/v1/line/stop", json={"reason": "camera set-up"}, headers=tech).status_code == 200
            frame = client.get("/api/v1/camera/frame", headers=tech)
            assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
            preview = cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_UNCHANGED)
            assert preview is not None and preview.shape[:2] == (120, 160)
            check = client.get("/api/v1/camera", headers=tech).json()["last_frame"]
            assert check["sharpness"] > 0 and check["verdict"] == "OK" and check["problem"] is None
            applied = client.post("/api/v1/camera/settings", json={"exposure_us": 2500, "gain_db": 3}, headers=tech)
            assert applied.status_code == 200, applied.text
            assert (applied.json()["exposure_us"], applied.json()["gain_db"]) == (2500, 3)
            assert station.line is not None
            device = station.line.camera._camera  # type: ignore[attr-defined]  # pypylon's: the values reached it
            assert device.ExposureTime.Value == pytest.approx(2500) and device.Gain.Value == pytest.approx(3, abs=0.01)
            entry = audit(station, "camera_set_up")[0]
            assert entry.actor == "token:tech" and entry.after == {"exposure_us": 2500, "gain_db": 3}
            assert client.post("/api/v1/camera/settings", json={"gain_db": 99}, headers=tech).status_code == 422
    finally:
        station.stop()


def test_sharpness_follows_focus() -> None:
    """The focus aid's figure: a blurred frame scores lower than the same frame in focus."""
    from vision.quality import QualityLimits, assess

    sharp = dark_part(size=(120, 160), seed=3)
    sharp[40:80, 40:120] = 200
    blurred = np.asarray(cv2.GaussianBlur(sharp, (9, 9), 4), dtype=np.uint8)
    assert assess(blurred, QualityLimits()).sharpness < assess(sharp, QualityLimits()).sharpness / 4
    assert np.any(blurred != sharp)
