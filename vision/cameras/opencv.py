"""OpenCV sources: a USB camera by index, an RTSP/HTTP stream, or a video file."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from vision.cameras.base import CameraError, CameraSettings
from vision.sources import Frame


class OpenCVCamera:
    """Keeps the newest frame from a background reader, so a trigger gets a current frame
    rather than one that waited in the driver's buffer."""

    def __init__(self, name: str, uri: str | int, loop_file: bool = True) -> None:
        self.name = name
        self.uri = int(uri) if isinstance(uri, str) and uri.isdigit() else uri
        self.loop_file = loop_file
        self._capture: cv2.VideoCapture | None = None
        self._latest: tuple[int, np.ndarray] | None = None
        self._index = 0
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self.read_failures = 0

    def open(self) -> None:
        capture = cv2.VideoCapture(self.uri)
        if not capture.isOpened():
            raise CameraError("disconnected", f"camera '{self.name}': OpenCV cannot open {self.uri!r}")
        self._capture = capture
        self._stop.clear()
        self._reader = threading.Thread(target=self._read_loop, name=f"opencv-{self.name}", daemon=True)
        self._reader.start()

    def _is_file(self) -> bool:
        return isinstance(self.uri, str) and "://" not in self.uri

    def _read_loop(self) -> None:
        capture = self._capture
        assert capture is not None
        frame_period = 1.0 / (capture.get(cv2.CAP_PROP_FPS) or 30.0) if self._is_file() else 0.0
        while not self._stop.is_set():
            ok, pixels = capture.read()
            if not ok:
                if self._is_file() and self.loop_file:
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                self.read_failures += 1
                self._stop.wait(0.05)
                continue
            with self._condition:
                self._index += 1
                self._latest = (self._index, pixels)
                self._condition.notify_all()
            if frame_period:
                self._stop.wait(frame_period)  # play files at their own frame rate

    def apply(self, settings: CameraSettings) -> None:
        if self._capture is None:
            return
        if settings.exposure_us is not None:
            self._capture.set(cv2.CAP_PROP_EXPOSURE, settings.exposure_us / 1000.0)
        if settings.gain_db is not None:
            self._capture.set(cv2.CAP_PROP_GAIN, settings.gain_db)

    def capture(self, timeout_s: float) -> Frame:
        if self._capture is None:
            self.open()
        with self._condition:
            seen = self._latest[0] if self._latest else 0
            if not self._condition.wait_for(lambda: self._latest is not None and self._latest[0] > seen, timeout_s):
                raise CameraError("timeout", f"camera '{self.name}': no frame within {timeout_s * 1000:.0f} ms")
            assert self._latest is not None
            index, pixels = self._latest
        return Frame(pixels, self.name, index, time.time(), str(self.uri))

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    @property
    def connected(self) -> bool:
        return self._capture is not None and self._capture.isOpened()
