"""Model registry and runtime: integrity checks, versions, promotion and rollback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from modelkit import dark_part, make_brightness_model

from models.manifest import ManifestError, read_manifest
from models.registry import UNOWNED_BUILD_AGE_S, ModelRegistry, UnknownModelError
from models.runtime import load_model
from vision.inspector import VisionInspector


def test_load_runs_and_decides(tmp_path: Path) -> None:
    model = load_model(make_brightness_model(tmp_path), threads=1)
    inspector = VisionInspector(model)
    assert inspector.judge(dark_part()).decision == "OK"
    result = inspector.judge(dark_part(spot=True))
    assert result.decision == "NG" and result.anomaly_map is not None and result.anomaly_map.shape == (8, 8)


def test_sha_mismatch_missing_file_and_bad_manifest_are_refused(tmp_path: Path) -> None:
    folder = make_brightness_model(tmp_path)
    onnx_file = folder / "model.onnx"
    original = onnx_file.read_bytes()
    onnx_file.write_bytes(original + b"\0")
    with pytest.raises(ManifestError, match="does not match the manifest"):
        load_model(folder)
    onnx_file.unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_model(folder)
    onnx_file.write_bytes(original)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"] = {"score": "no_such_output"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="no_such_output"):
        load_model(folder)
    (folder / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError, match="unreadable"):
        read_manifest(folder)
    (folder / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ManifestError, match="invalid manifest"):
        read_manifest(folder)


def test_register_promote_rollback(tmp_path: Path) -> None:
    bundled = tmp_path / "bundled"
    make_brightness_model(bundled, threshold=0.5)
    registry = ModelRegistry(tmp_path / "state", bundled_root=bundled)
    assert registry.names() == ["bright-spot"] and registry.active_version("bright-spot") == 1

    build = make_brightness_model(tmp_path / "build", threshold=0.7)
    manifest = read_manifest(build).model_copy(update={"version": 99})
    entry = registry.register(build, manifest)
    assert entry.version == 2 and not entry.bundled
    assert read_manifest(entry.folder).version == 2 and registry.active_version("bright-spot") == 2
    load_model(entry.folder)  # the re-numbered manifest still matches its ONNX

    assert registry.rollback("bright-spot").version == 1
    assert registry.active_version("bright-spot") == 1
    with pytest.raises(UnknownModelError, match="no earlier"):
        registry.rollback("bright-spot")
    registry.promote("bright-spot", 2)
    assert registry.history("bright-spot") == [1, 2]
    with pytest.raises(UnknownModelError, match="no version 7"):
        registry.promote("bright-spot", 7)
    with pytest.raises(UnknownModelError, match="known models: bright-spot"):
        registry.get("nothing")


def test_interrupted_registration_leaves_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "state", bundled_root=None)
    build = make_brightness_model(tmp_path / "build")
    (build / "model.onnx").unlink()
    with pytest.raises(ManifestError):
        registry.register(build, read_manifest(build))
    leftover = tmp_path / "state" / ".staging-x"
    leftover.mkdir()
    registry.clean_staging()
    assert registry.names() == [] and not leftover.exists()


@pytest.mark.parametrize("name", ["../outside", "..", "models/../../outside", "UPPER"])
def test_names_that_are_not_model_names_never_reach_the_file_system(tmp_path: Path, name: str) -> None:
    (tmp_path / "outside" / "1").mkdir(parents=True)
    (tmp_path / "outside" / "1" / "manifest.json").write_text("{}")  # what a '../outside' would find
    registry = ModelRegistry(tmp_path / "models", bundled_root=None)
    for look_up in (registry.versions, registry.get, lambda n: registry.promote(n, 1)):
        with pytest.raises(UnknownModelError, match="cannot name a model"):
            look_up(name)


def test_only_leftovers_of_ended_processes_are_cleaned(tmp_path: Path) -> None:
    """The service cleans the registry folder when it starts, and a `train` command may be running
    beside it: its build folder must survive; those of killed runs go."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    registry = ModelRegistry(tmp_path, bundled_root=None)
    running = registry.new_build_dir()
    orphaned = tmp_path / f".build-{int(ended.stdout)}-b2"
    unowned_new, unowned_old = tmp_path / ".build-0123abcd", tmp_path / ".build-4567cdef"
    staging = tmp_path / ".staging-x"
    for folder in (orphaned, unowned_new, unowned_old, staging):
        folder.mkdir()
    day_ago = time.time() - UNOWNED_BUILD_AGE_S - 60
    os.utime(unowned_old, (day_ago, day_ago))  # from a version that did not name its process
    assert sorted(registry.clean_staging()) == sorted([orphaned, unowned_old, staging])
    assert running.is_dir() and unowned_new.is_dir() and not orphaned.exists()
