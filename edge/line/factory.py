"""Build the camera and the line-controller bridge a station file describes."""

from __future__ import annotations

import importlib.util
import logging

from edge.config import BridgeSettings, CameraConfig, StationConfig
from firmware_bridge.handshake import LineBridge
from vision.cameras import Camera, FolderCamera, OpenCVCamera, PylonCamera

log = logging.getLogger(__name__)


def build_camera(settings: CameraConfig, config: StationConfig) -> Camera:
    folder = config.resolve(settings.folder) if settings.folder is not None else None
    if settings.type == "pylon" and settings.emulator and folder is not None and not _pypylon_installed():
        log.warning("line.camera '%s': pypylon is not installed, so its camera emulator cannot run; replaying "
                    "%s as the camera instead (pip install 'edge-inspect[camera]' for the emulator)",
                    settings.name, folder)
        return FolderCamera(settings.name, folder)
    if settings.type == "pylon":
        return PylonCamera(settings.name, settings.serial, settings.trigger, settings.trigger_line, folder,
                           emulator=settings.emulator)
    if settings.type == "opencv":
        if settings.uri is None:
            raise ValueError(f"line.camera '{settings.name}': type opencv needs 'uri' (device index, URL or file)")
        return OpenCVCamera(settings.name, settings.uri)
    if folder is None:
        raise ValueError(f"line.camera '{settings.name}': type folder needs 'folder'")
    return FolderCamera(settings.name, folder)


def _pypylon_installed() -> bool:
    return importlib.util.find_spec("pypylon") is not None


def build_bridge(settings: BridgeSettings) -> LineBridge:
    if settings.type == "modbus-server":
        from firmware_bridge.modbus_server import ModbusServerBridge

        return ModbusServerBridge(settings.host, settings.port, settings.unit_id)
    if settings.type == "modbus-client":
        from firmware_bridge.modbus_client import ModbusClientBridge

        return ModbusClientBridge(settings.host, settings.port, settings.unit_id, settings.poll_interval_ms / 1000.0)
    if settings.type == "serial":
        if not settings.serial_port:
            raise ValueError("line.bridge: type serial needs 'serial_port'")
        from firmware_bridge.serial_bridge import SerialBridge

        return SerialBridge(settings.serial_port, settings.baudrate)
    return NullBridge()


class NullBridge:
    """No line controller: results go nowhere (a station judging only over the API)."""

    def start(self, on_trigger: object, on_recipe: object, on_alarm: object = None) -> None:
        del on_trigger, on_recipe, on_alarm

    def publish(self, result: object) -> None:
        del result

    def set_status(self, **_: object) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {}

    def stop(self) -> None:
        return None
