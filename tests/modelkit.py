"""Small real ONNX models built in the tests (no network, no training): they exercise the real
runtime, registry and service path. The bundled model is tested separately."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from models.manifest import ImageInput, Manifest, TrainingInfo, sha256_of, write_manifest


def brightness_anomaly_onnx(path: Path, size: int = 64, cell: int = 8) -> None:
    """Score = the largest 8x8-cell mean brightness (0..1): a bright spot on a dark part is a defect."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, size, size])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1])
    amap = helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, [1, size // cell, size // cell])
    shape = helper.make_tensor("map_shape", TensorProto.INT64, [3], [1, size // cell, size // cell])
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Reshape", ["pooled", "map_shape"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["pooled"], ["score_keep"], keepdims=0),
        helper.make_node("Reshape", ["score_keep", "one"], ["score"]),
    ]
    one = helper.make_tensor("one", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "brightness", [image], [score, amap], initializer=[shape, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_brightness_model(root: Path, name: str = "bright-spot", version: int = 1, threshold: float = 0.5,
                          size: int = 64) -> Path:
    """Write ``root/name/version/`` with model.onnx and a valid manifest; returns the folder."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    brightness_anomaly_onnx(folder / "model.onnx", size)
    manifest = Manifest(
        name=name, version=version, kind="vision-anomaly", onnx_sha256=sha256_of(folder / "model.onnx"),
        input=ImageInput(height=size, width=size, channels=1, mean=[0.0], std=[1.0]),
        outputs={"score": "score", "anomaly_map": "anomaly_map"}, labels=["good", "defect"], ok_labels=["good"],
        threshold=threshold, training=TrainingInfo(tool="tests/modelkit.py"),
    )
    write_manifest(folder, manifest)
    return folder


def dark_part(size: tuple[int, int] = (120, 160), spot: bool = False, seed: int = 0) -> np.ndarray:
    """A dark grey part image (H, W) with optional bright defect spot in the lower right."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 60, size=size, dtype=np.uint8)
    if spot:
        h, w = size
        image[int(h * 0.6):int(h * 0.6) + h // 4, int(w * 0.6):int(w * 0.6) + w // 4] = 250
    return image
