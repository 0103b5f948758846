"""Basler cameras through pypylon (also its camera emulator, PYLON_CAMEMU=N, or emulator=True).

Software trigger: each capture() executes a trigger and returns that frame. Hardware trigger:
the camera's input line triggers it and capture() returns the next frame. An unplugged camera
is reopened on a later capture, at most once per back-off period.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vision.cameras.base import CameraError, CameraSettings, TriggerMode
from vision.sources import Frame, image_files

log = logging.getLogger(__name__)

_MONO_FORMATS = ("Mono8", "Mono10", "Mono12", "Mono16")
EMULATOR_CLASS = "BaslerCamEmu"  # pypylon's device class of its emulated cameras


def _pylon() -> Any:
    try:
        from pypylon import pylon
    except ImportError as exc:  # the 'camera' extra is not installed
        raise CameraError("unsupported", "pypylon is not installed: pip install 'edge-inspect[camera]'") from exc
    return pylon


class PylonCamera:
    def __init__(self, name: str, serial: str | None = None, trigger: TriggerMode = "software",
                 trigger_line: str = "Line1", emulation_folder: Path | None = None,
                 reconnect_backoff_s: float = 2.0, emulator: bool = False) -> None:
        self.name = name
        self.emulator = emulator  # only pypylon's emulated cameras, never a real one
        self.serial = serial
        self.trigger = trigger
        self.trigger_line = trigger_line
        self.emulation_folder = emulation_folder
        self.reconnect_backoff_s = reconnect_backoff_s
        self._camera: Any = None
        self._converter: Any = None
        self._settings = CameraSettings()
        self._next_attempt = 0.0
        self.reconnects = 0
        self.timeouts = 0
        self.device_serial = ""
        self._emulation_links: Path | None = None

    # -- connection ----------------------------------------------------------------------------
    def open(self) -> None:
        pylon = _pylon()
        if self.emulator and not os.environ.get("PYLON_CAMEMU", "").strip("0"):
            os.environ["PYLON_CAMEMU"] = "1"  # read by pypylon at each enumeration
        factory = pylon.TlFactory.GetInstance()
        devices = [d for d in factory.EnumerateDevices() if self.serial in (None, d.GetSerialNumber())
                   and (not self.emulator or d.GetDeviceClass() == EMULATOR_CLASS)]
        if not devices:
            wanted = f"serial {self.serial}" if self.serial else "any camera"
            wanted += ", emulated" if self.emulator else ""
            raise CameraError("disconnected", f"camera '{self.name}': no Basler camera found ({wanted})")
        try:
            camera = pylon.InstantCamera(factory.CreateDevice(devices[0]))
            camera.Open()
            self.device_serial = devices[0].GetSerialNumber()
            if self.emulation_folder is not None and devices[0].GetDeviceClass() == EMULATOR_CLASS:
                camera.TestImageSelector.Value = "Off"
                camera.ImageFileMode.Value = "On"
                camera.ImageFilename.Value = str(self._emulator_images())
            self._camera = camera
            self._configure_trigger()
            self._apply_now(self._settings)
            camera.StartGrabbing(pylon.GrabStrategy_OneByOne)
        except CameraError:
            self.close()
            raise
        except Exception as exc:  # genicam raises its own exception types
            self.close()
            raise CameraError("disconnected", f"camera '{self.name}': cannot open: {exc}") from exc
        log.info("camera %s open: %s, %s trigger", self.name, self.device_serial, self.trigger)

    def _emulator_images(self) -> Path:
        """The emulator loads every file of its folder: give it a folder of links to the images only."""
        assert self.emulation_folder is not None
        images = image_files(self.emulation_folder)
        if not images:
            raise CameraError("unsupported", f"camera '{self.name}': no images in {self.emulation_folder}")
        if self._emulation_links is None:
            self._emulation_links = Path(tempfile.mkdtemp(prefix=f"camemu-{self.name}-"))
        for old in self._emulation_links.iterdir():
            old.unlink()
        for image in images:
            (self._emulation_links / image.name).symlink_to(image.resolve())
        return self._emulation_links

    def _configure_trigger(self) -> None:
        camera = self._camera
        camera.TriggerSelector.Value = "FrameStart"
        if self.trigger == "free-run":
            camera.TriggerMode.Value = "Off"
            return
        camera.TriggerMode.Value = "On"
        camera.TriggerSource.Value = "Software" if self.trigger == "software" else self.trigger_line
        if self.trigger == "hardware":
            camera.TriggerActivation.Value = "RisingEdge"

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            if camera.IsGrabbing():
                camera.StopGrabbing()
            camera.Close()
        except Exception as exc:
            log.debug("closing camera %s: %s", self.name, exc)

    @property
    def connected(self) -> bool:
        return self._camera is not None and not self._camera.IsCameraDeviceRemoved()

    def _ensure_open(self) -> None:
        if self.connected:
            return
        if self._camera is not None:  # it was removed: drop it and reconnect
            self.close()
        now = time.monotonic()
        if now < self._next_attempt:
            raise CameraError("disconnected", f"camera '{self.name}' is disconnected; retrying shortly")
        self._next_attempt = now + self.reconnect_backoff_s
        self.open()
        self.reconnects += 1

    # -- settings ------------------------------------------------------------------------------
    def apply(self, settings: CameraSettings) -> None:
        self._settings = settings
        if self._camera is not None:
            self._apply_now(settings)

    def _apply_now(self, settings: CameraSettings) -> None:
        camera = self._camera
        needs_restart = settings.pixel_format is not None or settings.roi is not None
        grabbing = camera.IsGrabbing()
        try:
            if needs_restart and grabbing:
                camera.StopGrabbing()
            if settings.pixel_format is not None:
                camera.PixelFormat.Value = settings.pixel_format
            if settings.roi is not None:
                camera.OffsetX.Value = 0
                camera.OffsetY.Value = 0
                camera.Width.Value = settings.roi.width
                camera.Height.Value = settings.roi.height
                camera.OffsetX.Value = settings.roi.x
                camera.OffsetY.Value = settings.roi.y
            if settings.exposure_us is not None:
                camera.ExposureTime.Value = float(settings.exposure_us)
            if settings.gain_db is not None:
                camera.Gain.Value = float(settings.gain_db)
        except Exception as exc:
            raise CameraError("unsupported", f"camera '{self.name}': cannot apply {settings}: {exc}") from exc
        finally:
            if needs_restart and grabbing:
                camera.StartGrabbing(_pylon().GrabStrategy_OneByOne)

    # -- frames --------------------------------------------------------------------------------
    def capture(self, timeout_s: float) -> Frame:
        pylon = _pylon()
        self._ensure_open()
        camera = self._camera
        timeout_ms = max(1, int(timeout_s * 1000))
        try:
            if self.trigger == "software":
                if not camera.WaitForFrameTriggerReady(timeout_ms, pylon.TimeoutHandling_Return):
                    self.timeouts += 1
                    raise CameraError("timeout", f"camera '{self.name}' not ready for a trigger in {timeout_ms} ms")
                camera.ExecuteSoftwareTrigger()
            result = camera.RetrieveResult(timeout_ms, pylon.TimeoutHandling_Return)
        except CameraError:
            raise
        except Exception as exc:
            self.close()
            raise CameraError("disconnected", f"camera '{self.name}' stopped responding: {exc}") from exc
        if result is None or not result.IsValid():
            self.timeouts += 1
            if not self.connected:
                raise CameraError("disconnected", f"camera '{self.name}' was disconnected")
            raise CameraError("timeout", f"camera '{self.name}' delivered no frame within {timeout_ms} ms")
        try:
            if not result.GrabSucceeded():
                raise CameraError("grab_failed", f"camera '{self.name}': grab failed: "
                                                 f"{result.GetErrorDescription()} (code {result.GetErrorCode()})")
            pixels = self._to_array(result)
            return Frame(pixels, self.name, int(result.GetBlockID()), time.time(), self.device_serial)
        finally:
            result.Release()

    def _to_array(self, result: Any) -> np.ndarray:
        pixel_format = self._camera.PixelFormat.Value
        if pixel_format == "Mono8":
            return np.array(result.Array, dtype=np.uint8, copy=True)
        if pixel_format == "BGR8Packed":
            return np.array(result.Array, dtype=np.uint8, copy=True)
        pylon = _pylon()
        if self._converter is None:
            self._converter = pylon.ImageFormatConverter()
        mono = pixel_format in _MONO_FORMATS
        self._converter.OutputPixelFormat = pylon.PixelType_Mono8 if mono else pylon.PixelType_BGR8packed
        return np.array(self._converter.Convert(result).Array, dtype=np.uint8, copy=True)
