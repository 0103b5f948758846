"""YOLO classification training (ultralytics, AGPL-3.0): only with the optional ``yolo`` extra.

Training needs ultralytics, torch and torchvision; the trained model is a plain ONNX file with a
manifest, judged at run time by onnxruntime like every other model. Importing this package does
not import ultralytics or torch.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "install the optional yolo extra: pip install -e .[yolo] (AGPL-3.0)"


def available() -> bool:
    """True if ultralytics (and so torch) is installed."""
    return importlib.util.find_spec("ultralytics") is not None and importlib.util.find_spec("torch") is not None


def imgsz_problem(imgsz: int) -> str | None:
    """Why ``imgsz`` cannot be a YOLO input size, or None if it can."""
    if imgsz < 32 or imgsz % 32:
        return f"imgsz {imgsz}: the YOLO input size must be a multiple of 32 (e.g. 64, 128, 224)"
    return None
