"""Cameras behind one interface: Basler (pypylon), OpenCV (USB, RTSP, video file), image folders."""

from vision.cameras.base import Camera, CameraError, CameraSettings, Roi, TriggerMode
from vision.cameras.folder import FolderCamera
from vision.cameras.opencv import OpenCVCamera
from vision.cameras.pylon import PylonCamera

__all__ = ["Camera", "CameraError", "CameraSettings", "FolderCamera", "OpenCVCamera", "PylonCamera", "Roi",
           "TriggerMode"]
