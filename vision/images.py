"""Decode image bytes (JPEG, PNG, BMP, TIFF) into 8-bit arrays, refusing what a model cannot take."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff"}
# Pillow modes that become 8-bit grey or colour as they are (alpha is dropped: parts are opaque);
# 16-bit and 32-bit integer grey is scaled down (see _grey_to_8bit); float pixels are refused.
_GREY_MODES = {"L", "1", "LA"}
_COLOUR_MODES = {"RGB", "P", "PA", "YCbCr", "RGBA", "RGBX", "CMYK"}
_WIDE_GREY_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# Mono12 cameras write 16-bit files with their values in the low 12 bits (0..4095)
_CAMERA_BITS = 12


class ImageError(ValueError):
    """Bytes that are not an acceptable image. ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    pixels: npt.NDArray[np.uint8]  # HxW (grey) or HxWx3 (BGR, as OpenCV uses)
    format: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])


def decode_image(data: bytes, max_pixels: int = 64_000_000) -> DecodedImage:
    """Decode and validate; raises ImageError naming what is wrong."""
    if not data:
        raise ImageError("empty", "the request carried no image data (empty body or empty file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise ImageError("unsupported_format",
                                 f"{fmt} images are not accepted; send JPEG, PNG, BMP or TIFF")
            if image.width * image.height > max_pixels:
                raise ImageError("too_large", f"image is {image.width}x{image.height} px, more than the "
                                 f"{max_pixels / 1e6:.0f} megapixels allowed")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()  # forces a full decode: truncated files fail here
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("not_an_image", "the data is not a readable image (JPEG, PNG, BMP or TIFF expected)") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError("too_large", f"image is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt", f"the image is corrupt or truncated: {exc}") from exc
    return DecodedImage(_to_array(image), fmt)


def _to_array(image: Image.Image) -> npt.NDArray[np.uint8]:
    mode = image.mode
    if mode in _GREY_MODES:
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode in _COLOUR_MODES:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if mode in _WIDE_GREY_MODES:
        return _grey_to_8bit(np.asarray(image))
    raise ImageError("unsupported_pixel_format",
                     f"pixel format '{mode}' is not accepted: send 8- or 16-bit grey, or 8-bit colour")


def _grey_to_8bit(values: npt.NDArray[np.integer]) -> npt.NDArray[np.uint8]:
    """Wide grey pixels -> 8 bits, full scale to 255.

    A 12-bit camera (Mono12) writes 16-bit files with its values in the low bits, 0..4095: divided
    as 16-bit, the part would come out black in 16 grey levels. So an image whose brightest pixel
    fits in 12 bits is taken as 12-bit, anything brighter as 16-bit. The rule gives a camera's
    images the same scale however dark the part; only a 16-bit image darker than 1/16 of full scale
    would be brightened 16 times.
    """
    darkest, brightest = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if darkest < 0 or brightest > 0xFFFF:
        raise ImageError("unsupported_pixel_format",
                         "32-bit integer pixels outside 0..65535 are not accepted: send 8- or 16-bit grey")
    full_scale = (1 << _CAMERA_BITS) - 1 if brightest < 1 << _CAMERA_BITS else 0xFFFF
    return np.rint(values * (255.0 / full_scale)).astype(np.uint8)


def read_image_file(path: Path, max_pixels: int = 64_000_000) -> DecodedImage:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError("unreadable", f"{path}: cannot read file: {exc.strerror}") from exc
    return decode_image(data, max_pixels)


def encode_png(pixels: npt.NDArray[np.uint8], compression: int = 1) -> bytes:
    """Lossless; ``compression`` 0 (stored, ~3x faster, larger) to 9."""
    ok, buffer = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError("encode_failed", "could not encode image as PNG")
    return bytes(buffer)
