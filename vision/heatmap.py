"""Where the defect is: a box from the anomaly map, and the map as a small PNG."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


def locate_defect(anomaly_map: npt.NDArray[np.float32], threshold: float) -> dict[str, float] | None:
    """Bounding box (fractions of width/height) of the strongest region at or above the threshold.

    Returns None when no cell reaches the threshold. The peak is always inside the box.
    """
    if anomaly_map.size == 0 or float(anomaly_map.max()) < threshold:
        return None
    mask = (anomaly_map >= threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(mask, connectivity=8)
    peak_y, peak_x = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
    region = labels == labels[peak_y, peak_x] if count > 1 else mask.astype(bool)
    ys, xs = np.nonzero(region)
    h, w = anomaly_map.shape
    return {
        "x": float(xs.min() / w), "y": float(ys.min() / h),
        "w": float((xs.max() - xs.min() + 1) / w), "h": float((ys.max() - ys.min() + 1) / h),
        "peak_x": float((peak_x + 0.5) / w), "peak_y": float((peak_y + 0.5) / h),
        "peak_score": float(anomaly_map[peak_y, peak_x]),
    }


def heatmap_image(anomaly_map: npt.NDArray[np.float32], threshold: float,
                  size: tuple[int, int] | None = None) -> npt.NDArray[np.uint8]:
    """A colour heat map (BGR) where the threshold sits at mid-scale; optionally resized to (w, h)."""
    scale = 127.5 / max(threshold, 1e-6)
    grey = np.clip(anomaly_map * scale, 0, 255).astype(np.uint8)
    if size is not None:
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    return cv2.applyColorMap(grey, cv2.COLORMAP_JET)
