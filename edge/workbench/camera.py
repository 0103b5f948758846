"""Camera set-up for the workbench: a preview frame, exposure and gain through the camera where it takes
them, a sharpness figure (focus aid) and the quality gate's verdict on the frame.

The preview takes frames from the line's own camera, so it works while the line is stopped (a frame taken
during production would be one meant for a part); a station without a line camera, or with one that plays
recorded images, says so."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2

from edge.store import ConflictError
from vision.cameras import CameraError, CameraSettings
from vision.quality import QualityLimits, assess

if TYPE_CHECKING:
    from edge.station import Station

ADJUSTABLE = ("PylonCamera", "OpenCVCamera")  # cameras whose apply() sets exposure and gain


class CameraUnavailable(ConflictError):
    """No camera to set up, or not now (the line runs)."""


@dataclass
class CameraValues:
    exposure_us: float | None = None
    gain_db: float | None = None


class CameraSetup:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.values = CameraValues()
        self.last_check: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _camera(self) -> Any:
        line = self.station.line
        if line is None:
            raise CameraUnavailable("this station has no line camera to set up (it judges uploaded or replayed "
                                    "images); set the camera up where those images are taken")
        return line.camera

    def status(self) -> dict[str, Any]:
        line = self.station.line
        if line is None:
            return {"available": False, "adjustable": False, "name": None, "line_stopped": None,
                    "reason": "no line camera: this station judges uploaded or replayed images"}
        camera = line.camera
        adjustable = type(camera).__name__ in ADJUSTABLE
        return {"available": True, "adjustable": adjustable, "name": camera.name, "kind": type(camera).__name__,
                "connected": camera.connected, "line_stopped": line.stopped_line,
                "exposure_us": self.values.exposure_us, "gain_db": self.values.gain_db,
                "reason": None if adjustable else "this camera plays recorded images: exposure and gain are fixed",
                "last_frame": self.last_check}

    def _require_stopped(self) -> Any:
        camera = self._camera()
        line = self.station.line
        if line is not None and not line.stopped_line:
            raise CameraUnavailable("stop the line first (POST /api/v1/line/stop): the preview takes frames from "
                                    "the line's camera, which would take them from parts")
        return camera

    def frame(self) -> bytes:
        """A new frame as JPEG; its sharpness and quality-gate verdict become ``last_frame`` of status()."""
        camera = self._require_stopped()
        with self._lock:
            try:
                frame = camera.capture(2.0)
            except CameraError as exc:
                raise CameraUnavailable(f"the camera gave no frame: {exc}") from exc
        limits = self.station.inspection.quality if self.station.inspection is not None else None
        report = assess(frame.pixels, limits or QualityLimits())
        self.last_check = {**report.as_dict(), "verdict": "OK" if report.problem is None else "INVALID",
                           "width": int(frame.pixels.shape[1]), "height": int(frame.pixels.shape[0])}
        ok, encoded = cv2.imencode(".jpg", frame.pixels, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise CameraUnavailable("the frame could not be encoded as JPEG")
        return bytes(encoded)

    def apply(self, exposure_us: float | None, gain_db: float | None) -> dict[str, Any]:
        camera = self._require_stopped()
        if type(camera).__name__ not in ADJUSTABLE:
            raise CameraUnavailable("this camera plays recorded images: exposure and gain are fixed")
        with self._lock:
            try:
                camera.apply(CameraSettings(exposure_us=exposure_us, gain_db=gain_db))
            except CameraError as exc:
                raise CameraUnavailable(str(exc)) from exc
        before = {"exposure_us": self.values.exposure_us, "gain_db": self.values.gain_db}
        if exposure_us is not None:
            self.values.exposure_us = exposure_us
        if gain_db is not None:
            self.values.gain_db = gain_db
        return before
