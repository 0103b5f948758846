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
                progress: Callable[[int], None] | None = None) -> list[list[FloatArray]]:
        """Per image, the patch features of each (flipped) variant."""
        result = []
        for index, image in enumerate(images):
            tensor = to_tensor(image, spec).astype(np.float32)
            result.append([self(variant) for variant in flipped_variants(tensor, flips)])
            if progress:
                progress(index + 1)
        return result
