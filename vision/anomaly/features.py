"""Patch features of images, computed with the model's own front end in onnxruntime."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from models.manifest import ImageInput
from models.runtime import create_session
from vision.anomaly.graph import FEATURES_NAME, INPUT_NAME
from vision.anomaly.params import AnomalyParams
from vision.preprocess import to_tensor

FloatArray = npt.NDArray[np.float32]


def image_input(params: AnomalyParams) -> ImageInput:
    """The preprocessing of the anomaly model: grey, stretched to the input size, scaled to 0..1."""
    return ImageInput(tensor_name=INPUT_NAME, height=params.height, width=params.width, channels=1,
                      resize=params.resize, interpolation="area", layout="NCHW", dtype="float32",
                      scale=1.0 / 255.0, mean=[0.0], std=[1.0])


def flipped_variants(tensor: FloatArray, flips: bool) -> list[FloatArray]:
    """The tensor, plus its horizontal, vertical and double flips when asked."""
    if not flips:
        return [tensor]
    return [tensor, tensor[..., ::-1], tensor[..., ::-1, :], tensor[..., ::-1, ::-1]]


def lighting_variants(tensor: FloatArray, strength: float) -> list[FloatArray]:
    """Copies of a 0..1 image tensor [..., H, W] under a linear lighting ramp: brighter by up to
    ``strength`` on one side (left, right, top, bottom) and darker by as much on the opposite side."""
    if strength <= 0:
        return []
    height, width = tensor.shape[-2:]
    across = np.linspace(-strength, strength, width, dtype=np.float32)
    down = np.linspace(-strength, strength, height, dtype=np.float32)[:, None]
    return [np.clip(tensor * (1.0 + ramp), 0.0, 1.0).astype(np.float32)
            for ramp in (-across, across, -down, down)]


def augmented_variants(tensor: FloatArray, flips: bool, lighting_ramp: float = 0.0) -> list[FloatArray]:
    """The tensor, its flips when asked, and its lighting-ramp copies (see lighting_variants)."""
    return flipped_variants(tensor, flips) + lighting_variants(tensor, lighting_ramp)


class FeatureExtractor:
    """Runs the feature graph: one image tensor -> patch features [h*w, C]."""

    def __init__(self, model: onnx.ModelProto, work_dir: Path, threads: int) -> None:
        path = work_dir / "features.onnx"
        onnx.save(model, str(path))
        self.session = create_session(path, threads)

    def __call__(self, tensor: FloatArray) -> FloatArray:
        (features,) = self.session.run([FEATURES_NAME], {INPUT_NAME: np.ascontiguousarray(tensor)})
        channels = features.shape[1]
        return np.ascontiguousarray(features.reshape(channels, -1).T, dtype=np.float32)

    def extract(self, images: Iterable[npt.NDArray[np.uint8]], spec: ImageInput, flips: bool,
                progress: Callable[[int], None] | None = None,
                lighting_ramp: float = 0.0) -> list[list[FloatArray]]:
        """Per image, the patch features of each variant (the image first, see augmented_variants)."""
        result = []
        for index, image in enumerate(images):
            tensor = to_tensor(image, spec).astype(np.float32)
            result.append([self(variant) for variant in augmented_variants(tensor, flips, lighting_ramp)])
            if progress:
                progress(index + 1)
        return result
