"""Frame sources behind one interface. Folder replay feeds recorded images through the same path
as a camera (the embedded default and tests); camera sources follow the same protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vision.images import ImageError, read_image_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Frame:
    pixels: npt.NDArray[np.uint8]
    source: str
    index: int
    captured_at: float
    origin: str = ""  # file name or camera serial


@dataclass(frozen=True)
class FrameFailure:
    """A frame that could not be delivered; never judged, always counted."""

    source: str
    index: int
    reason: str
    message: str


class FrameSource(Protocol):
    name: str

    def frames(self, stop: threading.Event) -> Iterator[Frame | FrameFailure]: ...


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class FolderReplaySource:
    name: str
    folder: Path
    interval_s: float = 1.0
    loop: bool = True
    max_pixels: int = 64_000_000
    delivered: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"replay source '{self.name}': folder {self.folder} does not exist")
        if not image_files(self.folder):
            raise FileNotFoundError(f"replay source '{self.name}': no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                                    f"in {self.folder}")

    def frames(self, stop: threading.Event) -> Iterator[Frame | FrameFailure]:
        index = 0
        next_due = time.monotonic()
        while not stop.is_set():
            for path in image_files(self.folder):
                if stop.wait(max(0.0, next_due - time.monotonic())):
                    return
                next_due += self.interval_s
                try:
                    image = read_image_file(path, self.max_pixels)
                except ImageError as exc:
                    yield FrameFailure(self.name, index, exc.reason, str(exc))
                else:
                    self.delivered += 1
                    yield Frame(image.pixels, self.name, index, time.time(), path.name)
                index += 1
            if not self.loop:
                return
