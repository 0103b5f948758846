"""Reading training images: decode what can be decoded, report the rest with a reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vision.images import ImageError, read_image_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str


def split_masks(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(images, masks) of a list of files. A defect mask is ``*_mask.*``, or a ``.png`` beside a
    same-name image of another type (``a.jpg`` + ``a.png``, as in the magnetic-tile data)."""
    photos = {(p.parent, p.stem) for p in paths if p.suffix.lower() != ".png"}

    def is_mask(path: Path) -> bool:
        return path.stem.endswith("_mask") or (path.suffix.lower() == ".png" and (path.parent, path.stem) in photos)

    return [p for p in paths if not is_mask(p)], [p for p in paths if is_mask(p)]


def image_files(folder: Path) -> list[Path]:
    """The image files directly inside a folder, sorted by name, defect masks left out."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return split_masks(files)[0]


def read_training_image(path: Path) -> npt.NDArray[np.uint8]:
    """Decode one file to uint8 (HxW grey or HxWx3 BGR), with the decoder the service uses."""
    return read_image_file(path).pixels


def read_training_images(paths: list[Path]) -> tuple[list[tuple[Path, npt.NDArray[np.uint8]]], list[SkippedFile]]:
    """Decode every file; unreadable, corrupt or unsupported ones are returned as skipped with why."""
    images: list[tuple[Path, npt.NDArray[np.uint8]]] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        try:
            pixels = read_training_image(path)
        except ImageError as exc:
            skipped.append(SkippedFile(path, str(exc)))
            continue
        if min(pixels.shape[:2]) < 8:
            size = f"{pixels.shape[1]}x{pixels.shape[0]}"
            skipped.append(SkippedFile(path, f"image is only {size} px (at least 8x8 needed)"))
            continue
        images.append((path, pixels))
    return images, skipped


def undersized_images(images: list[tuple[Path, npt.NDArray[np.uint8]]], shown: int = 20) -> list[str]:
    """'name (WxH px)' of the images under half the set's median width and height (the first ``shown``).

    Scaled up to the model input, such an image (a thumbnail in the good folder, a crop) trains as a
    blurred part and lets blur pass as good: the threshold loosens for every part."""
    if len(images) < 3:
        return []
    heights = np.array([pixels.shape[0] for _, pixels in images])
    widths = np.array([pixels.shape[1] for _, pixels in images])
    small = (heights * 2 < np.median(heights)) & (widths * 2 < np.median(widths))
    return [f"{path.name} ({pixels.shape[1]}x{pixels.shape[0]} px)"
            for (path, pixels), is_small in zip(images, small, strict=True) if is_small][:shown]


def image_size_summary(images: list[npt.NDArray[np.uint8]]) -> dict[str, int]:
    """The training images' median and smallest width and height, for the manifest: inference refuses
    images far smaller than what the model learnt (vision.inspector.minimum_image_size)."""
    widths = np.array([pixels.shape[1] for pixels in images])
    heights = np.array([pixels.shape[0] for pixels in images])
    return {"median_width": int(np.median(widths)), "median_height": int(np.median(heights)),
            "min_width": int(widths.min()), "min_height": int(heights.min())}


def read_part_images(paths: list[Path], skipped: list[SkippedFile]) -> list[npt.NDArray[np.uint8]]:
    """The decodable part images of a labelled folder; unreadable files and defect masks beside the
    images are appended to ``skipped`` with the reason."""
    images, masks = split_masks(list(paths))
    readable, unreadable = read_training_images(images)
    skipped.extend(unreadable)
    skipped.extend(mask_skips(masks))
    return [pixels for _, pixels in readable]


def mask_skips(masks: list[Path]) -> list[SkippedFile]:
    """Defect masks found beside the images, reported as skipped."""
    return [SkippedFile(p, "a defect mask (same name as an image beside it), not a part image") for p in masks]


def skipped_summary(skipped: list[SkippedFile], shown: int = 5) -> str:
    """'; skipped: a.jpg (why), ...' for an error message, the first ``shown`` files named."""
    if not skipped:
        return ""
    named = ", ".join(f"{item.path.name} ({item.reason})" for item in skipped[:shown])
    more = f" and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"; skipped: {named}{more}"
