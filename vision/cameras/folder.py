"""A 'camera' that returns the images of a folder in name order, one per trigger (tests, demos)."""

from __future__ import annotations

import time
from pathlib import Path

from vision.cameras.base import CameraError, CameraSettings
from vision.images import ImageError, read_image_file
from vision.sources import Frame, image_files


class FolderCamera:
    def __init__(self, name: str, folder: Path, loop: bool = True) -> None:
        self.name = name
        self.folder = folder
        self.loop = loop
        self._files: list[Path] = []
        self._index = 0
        self._open = False

    def open(self) -> None:
        if not self.folder.is_dir() or not image_files(self.folder):
            raise CameraError("disconnected", f"camera '{self.name}': no images in {self.folder}")
        self._files = image_files(self.folder)
        self._open = True

    def apply(self, settings: CameraSettings) -> None:
        del settings  # recorded images have fixed acquisition settings

    def capture(self, timeout_s: float) -> Frame:
        del timeout_s
        if not self._open:
            self.open()
        if self._index >= len(self._files):
            if not self.loop:
                raise CameraError("timeout", f"camera '{self.name}': no more images")
            self._index = 0
        path = self._files[self._index]
        index = self._index
        self._index += 1
        try:
            image = read_image_file(path)
        except ImageError as exc:
            raise CameraError("grab_failed", f"camera '{self.name}': {exc}") from exc
        return Frame(image.pixels, self.name, index, time.time(), path.name)

    def close(self) -> None:
        self._open = False

    @property
    def connected(self) -> bool:
        return self._open
