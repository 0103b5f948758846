"""Turn a decoded image into a model's input tensor, identically at training and at run time."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from models.manifest import ImageInput

_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def to_channels(image: npt.NDArray[np.uint8], channels: int) -> npt.NDArray[np.uint8]:
    """Return an HxWxC uint8 view with C = ``channels`` (grey replicated, colour converted BGR->RGB)."""
    if image.ndim == 2:
        image = image[:, :, None]
    have = image.shape[2]
    if have == channels:
        return image if channels == 1 else np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    if have == 1 and channels == 3:
        return np.repeat(image, 3, axis=2)
    if have == 3 and channels == 1:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)[:, :, None]
    raise ValueError(f"cannot convert a {have}-channel image to {channels} channels")


def fit(image: npt.NDArray[np.uint8], spec: ImageInput) -> npt.NDArray[np.uint8]:
    """Resize an HxWxC image to the model's width x height (stretched, or aspect kept and mirrored)."""
    h, w = image.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return image
    if spec.resize == "fit":
        return _fit_keeping_aspect(image, spec)
    if spec.resize == "short-side-crop":
        return _short_side_crop(image, spec.height, spec)
    return _resize(image, spec.width, spec.height, spec)


def _resize(image: npt.NDArray[np.uint8], width: int, height: int, spec: ImageInput) -> npt.NDArray[np.uint8]:
    if spec.interpolation == "pil-bilinear":
        return _pil_bilinear(image, width, height)
    h, w = image.shape[:2]
    interpolation = _INTERPOLATION[spec.interpolation]
    if spec.interpolation == "area" and (h < height or w < width):
        interpolation = cv2.INTER_LINEAR  # INTER_AREA is meant for shrinking
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    pixels: npt.NDArray[np.uint8] = np.asarray(resized, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _fit_keeping_aspect(image: npt.NDArray[np.uint8], spec: ImageInput) -> npt.NDArray[np.uint8]:
    """Scale so the image just fits, then fill the margins with its mirror image."""
    h, w = image.shape[:2]
    factor = min(spec.height / h, spec.width / w)
    new_h = min(spec.height, max(2, round(h * factor)))
    new_w = min(spec.width, max(2, round(w * factor)))
    resized = _resize(image, new_w, new_h, spec)
    top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
    padded = cv2.copyMakeBorder(resized, top, spec.height - new_h - top, left, spec.width - new_w - left,
                                cv2.BORDER_REFLECT_101)
    pixels: npt.NDArray[np.uint8] = np.asarray(padded, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _pil_bilinear(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """Pillow's BILINEAR resize (antialiased when shrinking), as torchvision's Resize does on PIL images."""
    channels = image.shape[2]
    picture = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    pixels = np.asarray(picture.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


def _short_side_crop(image: npt.NDArray[np.uint8], size: int, spec: ImageInput) -> npt.NDArray[np.uint8]:
    """torchvision's Resize(size) + CenterCrop(size), with its rounding: the shorter side becomes
    ``size`` (the longer one ``int(size * long / short)``), then the centre square is cut out."""
    h, w = image.shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    resized = image if (new_h, new_w) == (h, w) else _resize(image, new_w, new_h, spec)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # half-to-even, as torchvision
    return np.ascontiguousarray(resized[top:top + size, left:left + size])


def to_tensor(image: npt.NDArray[np.uint8], spec: ImageInput) -> npt.NDArray[np.generic]:
    """Decoded 8-bit image (HxW grey or HxWx3 BGR, as OpenCV delivers) -> batch of one input tensor."""
    pixels = fit(to_channels(image, spec.channels), spec)
    if spec.dtype == "uint8":
        tensor: npt.NDArray[np.generic] = pixels
    else:
        mean = np.asarray(spec.mean, dtype=np.float32)
        std = np.asarray(spec.std, dtype=np.float32)
        tensor = (pixels.astype(np.float32) * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None])
