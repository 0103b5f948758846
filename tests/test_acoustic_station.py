"""Sound in the station: the acoustic API, continuous listening with its alarm, parts judged by
camera and microphone together, and the real microphone path through PulseAudio."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from modelkit import dark_part
from support import encode, write_station_config

pytest.importorskip("librosa", reason="the audio extra is not installed")
pytest.importorskip("soundfile", reason="the audio extra is not installed")

import soundfile as sf
from acoustic_synth import machine_sound, skip_without_portaudio, write_wav
from fastapi.testclient import TestClient
from prometheus_client import generate_latest

from acoustic.training import train_acoustic_model
from edge.api.app import create_app
from edge.config import load_config
from edge.station import Station
from edge.store import Verdict
from models.manifest import read_manifest
from models.registry import ModelRegistry

if TYPE_CHECKING:
    from acoustic.virtual_mic import VirtualMicrophone

ACOUSTIC = "/api/v1/verdicts/acoustic"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("sounds")
    normal = [write_wav(folder / f"normal_{i}.wav", machine_sound(i)) for i in range(8)]
    faulty = [write_wav(folder / f"bearing_{i}.wav", machine_sound(100 + i, fault="bearing")) for i in range(3)]
    return {"normal": normal, "bearing": faulty}


@pytest.fixture(scope="module")
def hum_model(clips: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("hum-build")
    train_acoustic_model(clips["normal"][:6], {}, "hum", build)
    return build


def with_hum(tmp_path: Path, hum_model: Path, **overrides: Any) -> Path:
    models = {"threads": 1, "vision": "bright-spot", "acoustic": "hum"}
    config = write_station_config(tmp_path, models=models, **overrides)
    ModelRegistry(tmp_path / "data" / "models", bundled_root=None).register(hum_model, read_manifest(hum_model))
    return config


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


@pytest.fixture
def sound_station(tmp_path: Path, hum_model: Path) -> Iterator[Station]:
    station = Station(load_config(with_hum(tmp_path, hum_model)))
    station.start()
    yield station
    station.stop()


def test_acoustic_api_judges_and_never_calls_bad_audio_ok(sound_station: Station,
                                                           clips: dict[str, list[Path]]) -> None:
    with TestClient(create_app(sound_station), base_url="http://127.0.0.1") as client:
        def post(data: bytes, content_type: str = "audio/wav") -> Any:
            return client.post(ACOUSTIC, content=data, headers={"content-type": content_type}, params={"serial": "M1"})

        normal = post(clips["normal"][7].read_bytes())
        assert normal.status_code == 200 and normal.json()["decision"] == "OK", normal.text
        fault = post(clips["bearing"][0].read_bytes())
        assert fault.json()["decision"] == "NG" and fault.json()["score"] >= fault.json()["threshold"]
        quiet = np.random.default_rng(0).normal(0, 1e-5, 32000).astype(np.float32)
        silence = post(wav_bytes(quiet)).json()
        assert silence["decision"] == "INVALID" and "silen" in silence["reason"].lower(), silence
        flat = post(wav_bytes(np.zeros(32000, np.float32))).json()
        assert flat["decision"] == "INVALID" and "dead device" in flat["reason"]
        wrong_rate = post(wav_bytes(machine_sound(3)[:16000], rate=8000)).json()
        assert wrong_rate["decision"] == "INVALID" and "8000" in wrong_rate["reason"]
        multipart = client.post(ACOUSTIC, files={"audio": ("a.wav", clips["normal"][6].read_bytes(), "audio/wav")})
        assert multipart.json()["decision"] == "OK"
        assert sound_station.store is not None
        stored = sound_station.store.counts()["verdicts"]
        refused = post(b"RIFF but not really a wave file")
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_audio"
        assert post(b"", "audio/wav").status_code == 400
        assert post(b"text", "text/plain").status_code == 415
        assert client.post(f"{ACOUSTIC}?model=nope", content=clips["normal"][0].read_bytes(),
                           headers={"content-type": "audio/wav"}).status_code == 404
        wrong_kind = client.post(f"{ACOUSTIC}?model=bright-spot", content=clips["normal"][0].read_bytes(),
                                 headers={"content-type": "audio/wav"})
        assert wrong_kind.status_code == 422 and wrong_kind.json()["error"]["code"] == "wrong_model_kind"
        image_to_sound_model = client.post("/api/v1/verdicts/vision?model=hum", content=png_part(),
                                           headers={"content-type": "image/png"})
        assert image_to_sound_model.status_code == 422, image_to_sound_model.text
        assert "not a vision model" in image_to_sound_model.json()["error"]["message"]
        assert sound_station.store.counts()["verdicts"] == stored
        record = client.get(f"/api/v1/verdicts/{fault.json()['id']}").json()
        assert record["modality"] == "acoustic" and record["model_name"] == "hum" and record["serial"] == "M1"


def test_continuous_listening_stores_windows_and_raises_the_k_of_n_alarm(
        tmp_path: Path, hum_model: Path, clips: dict[str, list[Path]]) -> None:
    machine = tmp_path / "machine"
    machine.mkdir()
    for i, path in enumerate(clips["bearing"]):
        (machine / f"{i}.wav").write_bytes(path.read_bytes())
    microphone = {"type": "wav", "folder": str(machine), "mode": "continuous", "continuous": {"k": 2, "n": 3}}
    station = Station(load_config(with_hum(tmp_path, hum_model, microphone=microphone)))
    station.start()
    try:
        assert station.store is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not station.store.alarms(active_only=True):
            time.sleep(0.2)
        windows = station.store.verdicts_since(0, 100)
        assert len(windows) >= 2 and {w.modality for w in windows} == {"acoustic"}
        assert all(w.decision == "NG" and w.source == "mic:mic1" for w in windows)
        alarm = station.store.alarms(active_only=True)[0]
        assert alarm.kind == "acoustic_anomaly" and alarm.severity == "critical"
    finally:
        station.stop()


def test_a_part_judged_by_camera_and_microphone_gets_one_decision(
        tmp_path: Path, hum_model: Path, clips: dict[str, list[Path]]) -> None:
    pytest.importorskip("pypylon", reason="the camera extra is not installed")
    from support import free_port
    from test_line import part_images

    from firmware_bridge.plc_sim import run_simulation

    machine = tmp_path / "machine"
    machine.mkdir()
    (machine / "fault.wav").write_bytes(clips["bearing"][0].read_bytes())
    port = free_port()
    recipes = [{"number": 1, "name": "listen", "deadline_ms": 6000, "acoustic": {}},  # the model's 2 s window
               {"number": 2, "name": "shadow", "deadline_ms": 6000, "acoustic": {},
                "decision_rule": "vision-decides"},
               {"number": 3, "name": "too-short", "deadline_ms": 6000, "acoustic": {"record_s": 0.5}}]
    line = {"camera": {"type": "pylon", "folder": str(part_images(tmp_path / "frames"))},
            "bridge": {"type": "modbus-server", "port": port}, "default_recipe": 1}
    microphone = {"type": "wav", "folder": str(machine), "mode": "per-part"}
    station = Station(load_config(with_hum(tmp_path, hum_model, line=line, recipes=recipes, microphone=microphone)))
    station.start()
    try:
        worst = run_simulation("modbus", f"127.0.0.1:{port}", parts=4, rate_hz=2, timeout_s=30, recipe=1,
                               lot="L1")
        shadow = run_simulation("modbus", f"127.0.0.1:{port}", parts=4, rate_hz=2, timeout_s=30, recipe=2,
                                lot="L2")
        short = run_simulation("modbus", f"127.0.0.1:{port}", parts=2, rate_hz=2, timeout_s=30, recipe=3,
                               lot="L3")
        assert worst.decisions == {"NG": 4}, "the machine sounds faulty: every part is NG under 'worst'"
        assert shadow.decisions == {"OK": 2, "NG": 2}, "in shadow mode the camera alone decides"
        assert short.decisions == {"INVALID": 1, "NG": 1}, "too short to hear: INVALID unless the camera says NG"
        assert station.store is not None
        time.sleep(0.3)
        verdicts = station.store.verdicts_since(0, 100)
        by_part: dict[int, dict[str, Verdict]] = {}
        for verdict in verdicts:
            by_part.setdefault(verdict.part_id, {})[verdict.modality] = verdict
        assert len(by_part) == 10 and all(set(v) == {"vision", "acoustic"} for v in by_part.values())
        decisions = {p["id"]: p["decision"] for p in station.store.reader().execute("SELECT id, decision FROM parts")}
        for part_id, verdict in by_part.items():
            vision, recipe = verdict["vision"].decision, verdict["vision"].recipe
            expected = {"listen": "NG", "shadow": vision, "too-short": "NG" if vision == "NG" else "INVALID"}[recipe]
            assert decisions[part_id] == expected, (recipe, verdict)
        too_short = [v["acoustic"] for v in by_part.values() if v["acoustic"].recipe == "too-short"]
        assert all(v.decision == "INVALID" and "short" in (v.reason or "") for v in too_short)
    finally:
        station.stop()


def png_part() -> bytes:
    return encode(dark_part(), ".png")


@contextmanager
def station_on_pulseaudio(tmp_path: Path, hum_model: Path,
                          frozen: bool = False) -> Iterator[tuple[VirtualMicrophone, Station]]:
    """A station listening continuously to a real PulseAudio microphone (``frozen``: the sound server
    hangs while the station starts)."""
    from acoustic.virtual_mic import VirtualMicrophone, missing_tools

    if missing_tools():
        pytest.skip(f"PulseAudio not installed ({', '.join(missing_tools())})")
    skip_without_portaudio()
    with VirtualMicrophone(sample_rate=16000) as mic:
        if frozen:
            mic.freeze()
        microphone = {"type": "sounddevice", "device": "pulse", "mode": "continuous",
                      "continuous": {"k": 1, "n": 2}}
        station = Station(load_config(with_hum(tmp_path, hum_model, microphone=microphone)))
        station.start()
        try:
            assert station.store is not None
            yield mic, station
        finally:
            station.stop()


def play_a_fault_until_ng(mic: VirtualMicrophone, station: Station, wav: Path, first_seed: int, clips: int,
                          timeout_s: float) -> list[str]:
    """Play a long bearing fault into the microphone until an NG window is stored; the decisions so far."""
    assert station.store is not None
    write_wav(wav, np.concatenate([machine_sound(first_seed + i, fault="bearing") for i in range(clips)]))
    player = mic.play(wav, wait=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(
            v.decision == "NG" for v in station.store.verdicts_since(0, 1000)):
        time.sleep(0.2)
    player.terminate()
    player.wait(10)
    return [v.decision for v in station.store.verdicts_since(0, 1000)]


def test_station_listens_to_a_real_microphone(tmp_path: Path, hum_model: Path) -> None:
    with station_on_pulseaudio(tmp_path, hum_model) as (mic, station):
        decisions = play_a_fault_until_ng(mic, station, tmp_path / "fault.wav", 200, 4, timeout_s=30)
        assert "NG" in decisions, decisions
        assert station.listener is not None and station.listener.running
        exposed = generate_latest(station.metrics.registry).decode()
        assert 'edge_audio_abandoned_streams{microphone="mic1"} 0.0' in exposed


def test_a_microphone_that_does_not_answer_at_start_up_is_alarmed_and_listened_to_once_it_does(
        tmp_path: Path, hum_model: Path) -> None:
    """The sound server hangs while the station starts (as a microphone that comes up after the
    service at boot): listening must not die with the first attempt to open it."""
    with station_on_pulseaudio(tmp_path, hum_model, frozen=True) as (mic, station):
        assert station.store is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not station.store.alarms(active_only=True):
            time.sleep(0.2)
        alarms = station.store.alarms(active_only=True)
        assert [a.kind for a in alarms] == ["microphone_unavailable"], alarms
        assert "cannot open the microphone" in alarms[0].message
        mic.thaw()
        decisions = play_a_fault_until_ng(mic, station, tmp_path / "fault.wav", 300, 8, timeout_s=60)
        assert "NG" in decisions, decisions  # heard once the server answers
        assert station.listener is not None and station.listener.running


def test_models_calibrate_sets_a_sound_models_threshold_from_unseen_normal_clips(
        tmp_path: Path, hum_model: Path) -> None:
    from test_service_live import run_cli

    config = with_hum(tmp_path, hum_model)
    normal, faulty = tmp_path / "normal", tmp_path / "bearing"
    normal.mkdir()
    faulty.mkdir()
    for i in range(24):  # a fixed microphone: the level varies a little (the model uses it, as by default)
        write_wav(normal / f"n{i:02d}.wav", machine_sound(300 + i, gain=0.97 + 0.0025 * i))
    write_wav(normal / "silent.wav", np.zeros(32000, np.float32))
    for i in range(3):
        write_wav(faulty / f"b{i}.wav", machine_sound(400 + i, fault="bearing"))
    result = run_cli("models", "calibrate", "--config", str(config), "hum", "--normal", str(normal),
                     "--abnormal", str(faulty), "--false-reject", "0.05")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["good_files"] == 24 and report["defect_files"] == {"bearing": 3}
    assert [Path(item["path"]).name for item in report["skipped"]] == ["silent.wav"]
    assert "flat" in report["skipped"][0]["reason"]  # a dead microphone, not a normal part
    assert report["at_new_threshold"]["false_reject_rate"] <= 0.05 + 1 / 24
    assert report["at_new_threshold"]["miss_rate"] == 0.0 and report["registered_version"] == 2
    shown = json.loads(run_cli("models", "show", "--config", str(config), "hum").stdout)
    assert shown["version"] == 2 and shown["threshold"] == report["new_threshold"] != report["threshold"]
    assert shown["kind"] == "acoustic-anomaly" and shown["training"]["parent_version"] == 1
