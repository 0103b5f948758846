"""Retraining on the station: CLI train -> register -> promote -> predict -> rollback, a cancelled
run that leaves nothing, and training data a technician can act on. Real training code throughout."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from modelkit import dark_part
from support import EDGE_INSPECT, PROJECT_ROOT, write_station_config
from test_service_live import run_cli

import edge.training
from edge.training import STARVED_HINT, Priority, TrainingCancelled, TrainingError, train
from models.registry import ModelRegistry


def part_folder(folder: Path, count: int, spot: bool = False, size: tuple[int, int] = (96, 160)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"p{i:03d}.png"), dark_part(size=size, spot=spot, seed=i))
    return folder


def test_train_vision_registers_promotes_and_predicts(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    good = part_folder(tmp_path / "good", 24)
    (good / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    # a Mono12 camera's 16-bit file and an export with alpha are parts like the others
    cv2.imwrite(str(good / "mono12.png"), dark_part(size=(96, 160), seed=30).astype(np.uint16) * 16)
    cv2.imwrite(str(good / "alpha.png"), cv2.cvtColor(dark_part(size=(96, 160), seed=31), cv2.COLOR_GRAY2BGRA))
    spots = part_folder(tmp_path / "spot", 4, spot=True)
    (spots / "p000_mask.png").write_bytes((spots / "p000.png").read_bytes())  # masks are not training images
    trained = run_cli("train", "vision", "--good", str(good), "--defect", str(spots), "--name", "parts",
                      "--config", str(config))
    assert trained.returncode == 0, trained.stderr
    assert "parts v1 registered and promoted" in trained.stdout
    assert "edge-inspect models calibrate parts --good DIR" in trained.stderr
    assert "broken.jpg" in trained.stderr, "unreadable files are skipped and reported"
    assert "mono12.png" not in trained.stderr and "alpha.png" not in trained.stderr
    assert "note: the images are 160x96 px (median), the model input 512x256" in trained.stderr
    data = ModelRegistry(tmp_path / "data" / "models", bundled_root=None).manifest("parts").training.data
    assert data["skipped_files"] == 1, data  # broken.jpg only
    trail = [json.loads(line) for line in run_cli("audit", "list", "--config", str(config)).stdout.splitlines()]
    trained_entry = next(e for e in trail if e["action"] == "model_trained")
    assert trained_entry["entity_id"] == "parts" and trained_entry["after"]["version"] == 1
    assert trained_entry["actor"].startswith("cli:") and trained_entry["after"]["active"] is True
    listing = run_cli("models", "list", "--config", str(config)).stdout
    assert "* parts" in listing and "vision-classifier" in listing, "labelled defects make a classifier"

    probe_ok, probe_ng = tmp_path / "ok.png", tmp_path / "ng.png"
    cv2.imwrite(str(probe_ok), dark_part(size=(96, 160), seed=99))
    cv2.imwrite(str(probe_ng), dark_part(size=(96, 160), spot=True, seed=98))
    predicted = run_cli("predict", "vision", "--model", "parts", "--json", str(probe_ok), str(probe_ng),
                        "--config", str(config))
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(probe_ok), str(probe_ng)]
    assert lines[1]["score"] > lines[0]["score"], "the part with a defect scores higher"
    assert lines[1]["decision"] == "NG" and lines[1]["label"] == "spot", "NG carries the defect folder's label"
    assert {"decision", "label", "score"} <= set(lines[0])

    cv2.imwrite(str(good / "thumbnail.png"), dark_part(size=(24, 40), seed=50))  # a thumbnail among the parts
    again = run_cli("train", "vision", "--good", str(good), "--name", "parts", "--priority", "low",
                    "--config", str(config))
    assert "parts v2 registered and promoted" in again.stdout
    assert "warning: 1 good image(s) under half the others' size" in again.stderr
    assert "thumbnail.png (40x24 px)" in again.stderr
    assert "vision-anomaly" in run_cli("models", "show", "parts", "--config", str(config)).stdout
    assert "rolled back to v1" in run_cli("models", "rollback", "parts", "--config", str(config)).stdout


def test_too_few_images_says_how_many_are_needed(tmp_path: Path) -> None:
    config = write_station_config(tmp_path)
    result = run_cli("train", "vision", "--good", str(part_folder(tmp_path / "few", 3)), "--name", "few",
                     "--config", str(config))
    assert result.returncode == 2 and "training failed" in result.stderr and "at least" in result.stderr
    assert "Traceback" not in result.stderr
    assert ModelRegistry(tmp_path / "data" / "models", bundled_root=None).names() == ["bright-spot"]


def test_a_cancelled_run_registers_nothing_and_leaves_no_build(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    good = sorted(part_folder(tmp_path / "good", 30, size=(400, 600)).glob("*.png"))
    cancel = threading.Event()
    progress: list[str] = []

    def cancel_soon(fraction: float, message: str) -> None:
        progress.append(message)
        cancel.set()

    started = time.monotonic()
    with pytest.raises(TrainingCancelled):
        train("vision", {"good": good}, "cancelled", registry, progress=cancel_soon, cancel=cancel)
    assert time.monotonic() - started < 30 and progress
    assert registry.names() == [] and not list((tmp_path / "models").glob(".build-*"))


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_killed_command_takes_its_training_with_it_and_the_next_run_clears_its_build(tmp_path: Path) -> None:
    """kill -9 of `train` (or of a technician's SSH session) cannot clean up: the training process
    notices its parent is gone and ends, and the next training run removes the orphaned build folder."""
    config = write_station_config(tmp_path)
    good = part_folder(tmp_path / "good", 40, size=(400, 600))
    command = subprocess.Popen([*EDGE_INSPECT, "train", "vision", "--good", str(good), "--name", "orphan",
                                "--config", str(config)], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state_dir = tmp_path / "data" / "models"
    deadline = time.monotonic() + 60
    trainers: list[int] = []
    while not (trainers and list(state_dir.glob(".build-*"))) and time.monotonic() < deadline:
        trainers = [pid for pid in children_of(command.pid)
                    if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        time.sleep(0.2)
    assert trainers, "the training process started"
    command.kill()
    command.wait(10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in trainers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in trainers), "the orphaned training ended"
    assert len(list(state_dir.glob(".build-*"))) == 1, "nothing could clean up after a kill -9"
    assert ModelRegistry(state_dir, bundled_root=None).names() == ["bright-spot"]

    again = run_cli("train", "vision", "--good", str(part_folder(tmp_path / "few", 12)), "--name", "next",
                    "--config", str(config))
    assert again.returncode == 0, again.stderr
    assert not list(state_dir.glob(".build-*")), "the next run removed the orphaned build folder"


def thread_priorities(pid: int) -> list[tuple[int, int]]:
    """(nice, scheduling policy) of every thread of a process."""
    found = []
    for tid in (int(t) for t in os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            found.append((os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid)))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="reads thread priorities from /proc")
@pytest.mark.parametrize(("priority", "policy"), [("idle", os.SCHED_IDLE), ("low", os.SCHED_OTHER)])
def test_training_runs_in_a_process_that_yields_to_inspection(tmp_path: Path, priority: Priority,
                                                               policy: int) -> None:
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    good = sorted(part_folder(tmp_path / "good", 30, size=(400, 600)).glob("*.png"))
    cancel = threading.Event()
    samples: list[list[tuple[int, int]]] = []

    def look_at_the_trainer(fraction: float, message: str) -> None:
        for child in multiprocessing.active_children():
            if child.name.startswith("train-vision") and child.pid is not None:
                samples.append(thread_priorities(child.pid))
        if message.startswith("features") or fraction >= 0.5:
            cancel.set()  # onnxruntime's threads exist by now

    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    with pytest.raises(TrainingCancelled):
        train("vision", {"good": good}, "niced", registry, progress=look_at_the_trainer, cancel=cancel,
              priority=priority, niceness=7)
    threads = [thread for sample in samples for thread in sample]
    assert threads and max(len(sample) for sample in samples) >= 2, samples
    assert all(nice >= min(19, own_nice + 7) for nice, _ in threads), threads
    assert all(found == policy for _, found in threads), threads  # idle: inspection preempts training at once
    assert os.getpriority(os.PRIO_PROCESS, 0) == own_nice and os.sched_getscheduler(0) == os.SCHED_OTHER


def _busy(duty: float, stop: multiprocessing.synchronize.Event) -> None:
    """Keep one CPU busy ``duty`` of the time, at normal priority (other work on the station)."""
    while not stop.is_set():
        until = time.perf_counter() + 0.02 * duty
        while time.perf_counter() < until:
            pass
        time.sleep(0.02 * (1 - duty))


def _train_on_one_cpu(tmp_path: Path, hog_duty: float | None) -> list[str]:
    """Progress messages of an idle-priority training on one CPU, beside a hog busy ``hog_duty`` of the time
    (None: no hog), until the run is found starved or has run for 8 s."""
    registry = ModelRegistry(tmp_path / f"models-{hog_duty}", bundled_root=None)
    good = sorted(part_folder(tmp_path / "good", 30, size=(400, 600)).glob("*.png"))
    cancel = threading.Event()
    messages: list[str] = []

    def watch(fraction: float, message: str) -> None:
        messages.append(message)
        if STARVED_HINT in message or time.monotonic() - started > 8:
            cancel.set()

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    own_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(own_cpus)})  # the hog and the trainer (which inherits it) share one CPU
    hog = context.Process(target=_busy, args=(hog_duty, stop), daemon=True) if hog_duty else None
    try:
        if hog:
            hog.start()
        timer = threading.Timer(120, cancel.set)
        timer.start()
        started = time.monotonic()
        with contextlib.suppress(TrainingCancelled):
            train("vision", {"good": good}, "one-cpu", registry, progress=watch, cancel=cancel)
        timer.cancel()
    finally:
        os.sched_setaffinity(0, own_cpus)
        stop.set()
        if hog:
            hog.join(5)
    return messages


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pins the processes to one CPU")
def test_a_starved_training_run_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A station busy with other work leaves an idle-priority trainer little CPU: its progress says why
    it is slow instead of looking hung; with the CPU to itself it does not."""
    monkeypatch.setattr(edge.training, "STARVED_AFTER_S", 3.0)
    beside_a_hog = _train_on_one_cpu(tmp_path, hog_duty=0.9)
    assert any(STARVED_HINT in message for message in beside_a_hog), beside_a_hog
    alone = _train_on_one_cpu(tmp_path, hog_duty=None)
    assert len(alone) > 3 and not any(STARVED_HINT in message for message in alone), alone


def test_bad_training_data_is_a_training_error(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(TrainingError, match="at least"):
        train("vision", {"good": [junk] * 10}, "junk", registry)
    assert registry.names() == []


def test_train_and_predict_acoustic_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("librosa", reason="the audio extra is not installed")
    from acoustic_synth import machine_sound, write_wav

    config = write_station_config(tmp_path)
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(6):
        write_wav(normal / f"n{i}.wav", machine_sound(i))
    fresh = write_wav(tmp_path / "fresh.wav", machine_sound(50))
    faulty = write_wav(tmp_path / "bearing.wav", machine_sound(150, fault="bearing"))
    trained = run_cli("train", "acoustic", "--normal", str(normal), "--name", "pump", "--config", str(config))
    assert trained.returncode == 0 and "pump v1 registered and promoted" in trained.stdout, trained.stderr
    predicted = run_cli("predict", "acoustic", "--model", "pump", "--json", str(fresh), str(faulty),
                        "--config", str(config))
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [(line["path"], line["decision"]) for line in lines] == [(str(fresh), "OK"), (str(faulty), "NG")]
    assert lines[1]["score"] > lines[0]["score"] and lines[0]["label"]
    missing = run_cli("train", "acoustic", "--normal", str(tmp_path / "none"), "--name", "x", "--config", str(config))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


@pytest.mark.parametrize("name", ["Tile_A", "../evil", "two words", "a/b", ""])
def test_a_name_that_cannot_name_a_model_is_refused_before_training(tmp_path: Path, name: str) -> None:
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    good = part_folder(tmp_path / "good", 12)
    progress: list[str] = []
    with pytest.raises(TrainingError, match="cannot name a model"):
        train("vision", {"good": sorted(good.iterdir())}, name, registry, progress=lambda _, m: progress.append(m))
    assert progress == [], "refused before a training process started, not after a run"
    assert registry.names() == [] and not list((tmp_path / "models").glob(".build-*"))
    refused = run_cli("train", "vision", "--good", str(good), "--name", name, "--config",
                      str(write_station_config(tmp_path)))
    assert refused.returncode == 2 and "cannot name a model" in refused.stderr and "%]" not in refused.stderr
