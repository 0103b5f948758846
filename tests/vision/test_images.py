"""Decoding what cameras and technicians' folders hold: wide grey pixels keep their detail, alpha
and CMYK become plain colour, and what cannot be judged is refused with the reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vision.images import ImageError, decode_image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def ramp(top: int, dtype: type = np.uint16) -> np.ndarray:
    """A 16x64 horizontal ramp from 0 to ``top``."""
    return np.tile(np.linspace(0, top, 64).round().astype(dtype), (16, 1))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_full_range_16_bit_grey_keeps_its_high_byte(fmt: str) -> None:
    values = ramp(65535)
    pixels = decode_image(encoded(Image.fromarray(values), fmt)).pixels
    assert pixels.dtype == np.uint8 and pixels.shape == values.shape
    assert np.abs(pixels.astype(int) - values.astype(int) / 257).max() <= 1
    assert pixels.max() == 255 and pixels.min() == 0


@pytest.mark.parametrize("top", [4095, 1000, 60])
def test_12_bit_camera_pixels_in_16_bit_files_keep_one_scale(top: int) -> None:
    """A Mono12 camera's 0..4095 in a 16-bit file would be 16 grey levels at a fixed /257; and a dark
    part from the same camera keeps the camera's scale rather than being brightened."""
    values = ramp(top)
    pixels = decode_image(encoded(Image.fromarray(values), "TIFF")).pixels
    assert np.abs(pixels - values.astype(float) * 255 / 4095).max() <= 0.5
    if top == 4095:
        assert len(np.unique(pixels)) == 64, "the ramp keeps its grey levels"


def test_32_bit_integer_grey_in_the_16_bit_range_is_scaled_like_16_bit() -> None:
    values = ramp(4095, np.int32)
    pixels = decode_image(encoded(Image.fromarray(values, mode="I"), "TIFF")).pixels
    assert np.abs(pixels - values * 255 / 4095).max() <= 1


def test_alpha_is_dropped_and_colour_order_is_bgr() -> None:
    rgba = Image.new("RGBA", (32, 16), (200, 100, 50, 0))  # fully transparent: the colour still counts
    pixels = decode_image(encoded(rgba, "PNG")).pixels
    assert pixels.shape == (16, 32, 3) and tuple(pixels[0, 0]) == (50, 100, 200)
    grey_alpha = decode_image(encoded(Image.new("LA", (32, 16), (90, 10)), "PNG")).pixels
    assert grey_alpha.shape == (16, 32) and grey_alpha[0, 0] == 90


def test_cmyk_becomes_colour() -> None:
    pixels = decode_image(encoded(Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "TIFF")).pixels  # red
    assert tuple(pixels[0, 0]) == (0, 0, 255)


@pytest.mark.parametrize(("image", "says"), [
    (Image.fromarray(np.full((16, 16), 0.5, np.float32)), "pixel format 'F'"),
    (Image.fromarray(np.full((16, 16), -5, np.int32), mode="I"), "outside 0..65535"),
    (Image.fromarray(np.full((16, 16), 70000, np.int32), mode="I"), "outside 0..65535"),
])
def test_pixels_without_a_grey_scale_are_refused_with_the_reason(image: Image.Image, says: str) -> None:
    with pytest.raises(ImageError) as refused:
        decode_image(encoded(image, "TIFF"))
    assert refused.value.reason == "unsupported_pixel_format" and says in str(refused.value)
