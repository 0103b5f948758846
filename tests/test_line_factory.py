"""Which camera a station file's line gets: the emulator when asked for, the folder without pypylon,
and a real camera otherwise (runs without pypylon installed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_station_config

from edge.config import ConfigError, load_config
from edge.line import factory
from vision.cameras import FolderCamera, PylonCamera


def config_with(tmp_path: Path, **camera: object) -> Path:
    (tmp_path / "frames").mkdir(exist_ok=True)
    settings = {"type": "pylon", "folder": "frames", **camera}
    return write_station_config(tmp_path, line={"camera": settings, "bridge": {"type": "none"}},
                                recipes=[{"number": 1, "name": "standard"}])


def test_the_emulator_is_asked_for_by_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "_pypylon_installed", lambda: True)
    config = load_config(config_with(tmp_path, emulator=True))
    assert config.line is not None
    camera = factory.build_camera(config.line.camera, config)
    assert isinstance(camera, PylonCamera) and camera.emulator and camera.emulation_folder == tmp_path / "frames"
    real = load_config(config_with(tmp_path))
    assert real.line is not None
    camera = factory.build_camera(real.line.camera, real)
    assert isinstance(camera, PylonCamera) and not camera.emulator


def test_without_pypylon_the_emulated_camera_replays_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(factory, "_pypylon_installed", lambda: False)  # pypylon cannot be uninstalled for a test
    config = load_config(config_with(tmp_path, emulator=True))
    assert config.line is not None
    camera = factory.build_camera(config.line.camera, config)
    assert isinstance(camera, FolderCamera) and camera.folder == tmp_path / "frames"
    assert "pypylon is not installed" in caplog.text
    real = load_config(config_with(tmp_path))  # a real camera never falls back: its absence must show
    assert real.line is not None
    assert isinstance(factory.build_camera(real.line.camera, real), PylonCamera)


def test_emulator_is_only_for_pylon(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="emulator"):
        load_config(config_with(tmp_path, type="folder", emulator=True))
