"""What every camera offers the pipeline: settings, one frame per trigger, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from vision.sources import Frame


class CameraError(Exception):
    """A frame that could not be had. ``reason``: timeout, disconnected, grab_failed, unsupported."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Roi:
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class CameraSettings:
    """Per-recipe acquisition settings; None leaves the camera's value as it is."""

    exposure_us: float | None = None
    gain_db: float | None = None
    pixel_format: str | None = None
    roi: Roi | None = None


TriggerMode = Literal["software", "hardware", "free-run"]


class Camera(Protocol):
    name: str

    def open(self) -> None: ...

    def apply(self, settings: CameraSettings) -> None: ...

    def capture(self, timeout_s: float) -> Frame:
        """Software trigger: trigger and return that frame. Hardware trigger: the next frame the
        camera's trigger line produced. Raises CameraError."""
        ...

    def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...
