"""Camera sources behind one interface: OpenCV on a real video file, pypylon's emulator with
settings, reopening, and a grab that times out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from modelkit import dark_part

from vision.cameras import CameraError, CameraSettings, FolderCamera, OpenCVCamera, PylonCamera, Roi


def test_opencv_camera_reads_a_video_file(tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 50, (160, 120))
    assert writer.isOpened()
    for i in range(20):
        writer.write(cv2.cvtColor(dark_part(spot=i % 2 == 1, seed=i), cv2.COLOR_GRAY2BGR))
    writer.release()
    camera = OpenCVCamera("usb", str(video))
    camera.open()
    try:
        frames = [camera.capture(timeout_s=2.0) for _ in range(5)]
        assert all(f.pixels.shape == (120, 160, 3) for f in frames)
        assert [f.index for f in frames] == sorted({f.index for f in frames}), "each capture is a newer frame"
        assert camera.connected
    finally:
        camera.close()
    with pytest.raises(CameraError) as missing:
        OpenCVCamera("usb", str(tmp_path / "nothing.avi")).open()
    assert missing.value.reason == "disconnected"


def test_folder_camera_and_an_empty_folder(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), dark_part())
    camera = FolderCamera("replay", tmp_path)
    assert camera.capture(1.0).origin == "a.png"
    with pytest.raises(CameraError):
        FolderCamera("replay", tmp_path / "empty").open()


@pytest.fixture
def emulated(tmp_path: Path) -> Path:
    pytest.importorskip("pypylon", reason="the camera extra (pypylon) is not installed")
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), dark_part(size=(200, 300), seed=i))
    return tmp_path


def test_pylon_emulator_applies_recipe_settings_and_reopens(emulated: Path) -> None:
    camera = PylonCamera("cam", trigger="software", emulation_folder=emulated, reconnect_backoff_s=0.0)
    camera.open()
    try:
        camera.apply(CameraSettings(exposure_us=800, gain_db=1.0, pixel_format="Mono8", roi=Roi(0, 0, 160, 120)))
        frame = camera.capture(1.0)
        assert frame.pixels.dtype == np.uint8 and frame.pixels.shape[0] <= 120 and frame.pixels.shape[1] <= 160
        assert frame.origin.startswith("0815-")  # the emulator's serial number
        camera.close()  # as after a fault: the next capture opens the camera again
        assert not camera.connected
        assert camera.capture(1.0).pixels.size > 0 and camera.reconnects == 1
        with pytest.raises(CameraError) as unsupported:
            camera.apply(CameraSettings(pixel_format="Mono12p"))
        assert unsupported.value.reason == "unsupported"
    finally:
        camera.close()
