"""ONNX graphs of the anomaly model, built from the bundled backbone with onnx.helper.

Two graphs share one front end, so training sees exactly what inference computes:

* the *feature graph*: image -> patch features [1, C, h, w] (backbone stages, neighbourhood
  mean, upsampling to the finest map, concatenation); used while training;
* the *scoring graph*: the same front end followed by the projection, the nearest-neighbour
  search against the memory bank, the per-position normalisation and the map smoothing,
  ending in ``score`` [1] and ``anomaly_map`` [1, h, w].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.manifest import sha256_of
from vision.anomaly.gaussian import GaussianTerm
from vision.anomaly.params import LAYER_STRIDES, AnomalyParams

BACKBONE_ONNX = Path(__file__).resolve().parents[2] / "models" / "backbones" / "lite0_features.onnx"
INPUT_NAME = "image"
FEATURES_NAME = "patch_features"
SCORE_NAME = "score"
MAP_NAME = "anomaly_map"
PROBABILITIES_NAME = "probabilities"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_BACKBONE_INPUT = "backbone_input"
SEARCH_CHUNK = 512  # bank rows per distance block: the [queries x chunk] block stays in cache

FloatArray = npt.NDArray[np.float32]


@dataclass
class SearchHead:
    """Everything learnt in training that the scoring graph carries as constants."""

    mean: FloatArray  # [C] feature mean subtracted before the projection
    projection: FloatArray  # [C, D]
    bank: FloatArray  # [M, D] memory bank (projected)
    position_mean: FloatArray  # [h, w] typical distance of good parts at each map cell
    position_scale: FloatArray  # [h, w] its spread
    gaussian: GaussianTerm | None = None  # per-position Gaussians blended into the map (None: the bank alone)


class _Builder:
    def __init__(self, prefix: str = "") -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        self._prefix = prefix  # keeps names unique when extending a graph built by another builder

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self._prefix}{hint}_{self._count}"

    def const(self, hint: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, output: str | None = None,
           **attributes: Any) -> str:
        out = output or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attributes))
        return out


def _backbone(params: AnomalyParams) -> onnx.GraphProto:
    expected = json.loads(BACKBONE_ONNX.with_suffix(".json").read_text(encoding="utf-8"))["sha256"]
    if sha256_of(BACKBONE_ONNX) != expected:
        raise ValueError(f"{BACKBONE_ONNX} does not match the sha256 in its .json: the backbone file is corrupt "
                         "or was replaced; restore it or re-run models/backbones/export_lite0.py")
    model = onnx.load(str(BACKBONE_ONNX))
    graph = model.graph
    unknown = [layer for layer in params.layers if layer not in {o.name for o in graph.output}]
    if unknown:
        raise ValueError(f"backbone {BACKBONE_ONNX.name} has no output(s) {unknown}")
    # keep only the nodes that the wanted outputs depend on
    needed = set(params.layers)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    for node in kept:
        for index, name in enumerate(node.input):
            if name == INPUT_NAME:
                node.input[index] = _BACKBONE_INPUT
    initializers = [init for init in graph.initializer if init.name in needed]
    return helper.make_graph(kept, "backbone", [], [], initializers)


def _front_end(b: _Builder, params: AnomalyParams) -> str:
    """image [1,1,H,W] (0..1 grey) -> patch features [1,C,h,w]."""
    x = INPUT_NAME
    if params.standardize:
        # the same brightness and contrast for every part: mean 0.45, standard deviation 0.2
        mean = b.op("ReduceMean", [x], "img_mean", axes=[1, 2, 3], keepdims=1)
        centred = b.op("Sub", [x, mean], "img_centred")
        variance = b.op("ReduceMean", [b.op("Mul", [centred, centred])], "img_var", axes=[1, 2, 3], keepdims=1)
        spread = b.op("Sqrt", [b.op("Add", [variance, b.const("eps", 1e-6)])], "img_std")
        x = b.op("Add", [b.op("Mul", [b.op("Div", [centred, spread]), b.const("c", 0.2)]), b.const("m", 0.45)])
    rgb = b.op("Concat", [x, x, x], "rgb", axis=1)
    scale = b.const("inv_std", (1.0 / np.asarray(_IMAGENET_STD)).reshape(1, 3, 1, 1))
    shift = b.const("neg_mean", (-np.asarray(_IMAGENET_MEAN) / np.asarray(_IMAGENET_STD)).reshape(1, 3, 1, 1))
    normalised = b.op("Add", [b.op("Mul", [rgb, scale]), shift], "normalised")
    if params.pad:
        pads = b.const("pads", [0, 0, params.pad, params.pad, 0, 0, params.pad, params.pad], np.int64)
        b.op("Pad", [normalised, pads], output=_BACKBONE_INPUT, mode="reflect")
    else:
        b.op("Identity", [normalised], output=_BACKBONE_INPUT)
    parts = []
    for layer in params.layers:
        stride = LAYER_STRIDES[layer]
        feature = layer
        crop = params.pad // stride
        if crop:
            h, w = params.height // stride, params.width // stride
            starts = b.const("starts", [crop, crop], np.int64)
            ends = b.const("ends", [crop + h, crop + w], np.int64)
            feature = b.op("Slice", [feature, starts, ends, b.const("axes", [2, 3], np.int64)], f"{layer}_crop")
        if params.aggregate > 1:
            k = params.aggregate
            feature = b.op("AveragePool", [feature], f"{layer}_agg", kernel_shape=[k, k],
                           pads=[k // 2] * 4, strides=[1, 1], count_include_pad=0)
        if stride < params.map_stride:  # finer map: keep its strongest responses (thin cracks)
            factor = params.map_stride // stride
            feature = b.op("MaxPool", [feature], f"{layer}_down", kernel_shape=[factor, factor],
                           strides=[factor, factor])
        elif stride > params.map_stride:
            up = float(stride // params.map_stride)
            scales = b.const("scales", [1.0, 1.0, up, up])
            feature = b.op("Resize", [feature, "", scales], f"{layer}_up", mode="linear",
                           coordinate_transformation_mode="half_pixel")
        parts.append(feature)
    return b.op("Concat", parts, output=FEATURES_NAME, axis=1) if len(parts) > 1 else b.op(
        "Identity", parts, output=FEATURES_NAME)


def _search(b: _Builder, features: str, head: SearchHead, params: AnomalyParams) -> None:
    """patch features -> anomaly map [1,h,w] and score [1] (max of the map)."""
    map_h, map_w = params.map_shape
    channels = head.mean.shape[0]
    flat = b.op("Reshape", [features, b.const("shape", [channels, map_h * map_w], np.int64)])
    queries = b.op("Transpose", [flat], "queries", perm=[1, 0])
    centred = b.op("Sub", [queries, b.const("feature_mean", head.mean)])
    projected = b.op("MatMul", [centred, b.const("projection", head.projection)], "projected")
    # squared distance |q|^2 - 2 q.m + |m|^2, minimum over the bank, in cache-sized chunks
    bank_sq = (head.bank.astype(np.float64) ** 2).sum(1).astype(np.float32)
    minima = []
    for start in range(0, len(head.bank), SEARCH_CHUNK):
        part = slice(start, start + SEARCH_CHUNK)
        cross = b.op("Gemm", [projected, b.const("bank_t_x_minus2", -2.0 * head.bank[part].T),
                              b.const("bank_sq", bank_sq[part])], "cross")
        minima.append(b.op("ReduceMin", [cross], "chunk_min", axes=[1], keepdims=0))
    nearest = b.op("Min", minima, "nearest_part") if len(minima) > 1 else minima[0]
    query_sq = b.op("ReduceSumSquare", [projected], "query_sq", axes=[1], keepdims=0)
    squared = b.op("Max", [b.op("Add", [nearest, query_sq]), b.const("zero", 0.0)])
    distance = b.op("Sqrt", [squared], "distance")
    grid = b.op("Reshape", [distance, b.const("grid", [1, 1, map_h, map_w], np.int64)])
    normalised = _normalise(b, grid, head.position_mean, head.position_scale, "normalised_map")
    if head.gaussian is not None:
        normalised = _blend_gaussian(b, centred, normalised, head.gaussian, params)
    kernel = gaussian_kernel(params.map_sigma)
    if kernel.shape[0] > 1:
        k = kernel.shape[0]
        normalised = b.op("Conv", [normalised, b.const("smooth", kernel[None, None])], "smoothed",
                          kernel_shape=[k, k], pads=[k // 2] * 4)
    b.op("Reshape", [normalised, b.const("map_shape", [1, map_h, map_w], np.int64)], output=MAP_NAME)
    b.op("ReduceMax", [normalised], output=SCORE_NAME, axes=[1, 2, 3], keepdims=0)


def _normalise(b: _Builder, grid: str, mean: FloatArray, scale: FloatArray, hint: str) -> str:
    """(grid - mean) / scale, cell by cell: a map [1,1,h,w] in units of good parts' spread there."""
    centred = b.op("Sub", [grid, b.const("position_mean", mean[None, None])])
    return b.op("Div", [centred, b.const("position_scale", scale[None, None])], hint)


def _blend_gaussian(b: _Builder, centred: str, normalised: str, term: GaussianTerm, params: AnomalyParams) -> str:
    """(1 - w) * the bank's normalised map + w * the normalised Mahalanobis map of each cell's Gaussian."""
    map_h, map_w = params.map_shape
    cells, dims = term.gaussians.mean.shape
    projected = b.op("MatMul", [centred, b.const("gaussian_projection", term.projection)], "gaussian_features")
    diff = b.op("Sub", [projected, b.const("gaussian_mean", term.gaussians.mean)], "gaussian_diff")  # [hw, D]
    as_row = b.op("Reshape", [diff, b.const("row_shape", [cells, 1, dims], np.int64)])
    whitened = b.op("MatMul", [as_row, _whitening_factors(b, term)], "whitened")  # [hw, 1, D]
    squared = b.op("ReduceSumSquare", [whitened], axes=[2], keepdims=0)  # [hw, 1]
    grid = b.op("Reshape", [b.op("Sqrt", [squared]), b.const("grid", [1, 1, map_h, map_w], np.int64)],
                "mahalanobis")
    gaussian = _normalise(b, grid, term.position_mean, term.position_scale, "gaussian_map")
    return b.op("Add", [b.op("Mul", [normalised, b.const("bank_weight", 1.0 - term.weight)]),
                        b.op("Mul", [gaussian, b.const("gaussian_weight", term.weight)])], "blended_map")


def _whitening_factors(b: _Builder, term: GaussianTerm) -> str:
    """The cells' whitening factors [hw, D, D], unpacked from their float16 upper triangles.

    Every input is a constant, so onnxruntime folds the unpacking once when the session loads."""
    gaussians = term.gaussians
    cells, dims = gaussians.mean.shape
    triangles = gaussians.half_precision_triangles()
    packed = b.op("Concat", [b.op("Cast", [b.const("gaussian_triangles", triangles, np.float16)],
                                  to=TensorProto.FLOAT),
                             b.const("zero_column", np.zeros((cells, 1)))], axis=1)  # [hw, D(D+1)/2 + 1]
    rows, columns = np.triu_indices(dims)
    where = np.full((dims, dims), len(rows), np.int64)  # below the diagonal: the zero column
    where[rows, columns] = np.arange(len(rows))
    square = b.op("Gather", [packed, b.const("triangle_index", where.reshape(-1), np.int64)], axis=1)
    shaped = b.op("Reshape", [square, b.const("factor_shape", [cells, dims, dims], np.int64)])
    return b.op("Mul", [shaped, b.const("gaussian_scale", gaussians.scale[:, None, None])], "gaussian_whitening")


def gaussian_kernel(sigma: float) -> FloatArray:
    """A normalised 2-D Gaussian (1x1 when sigma is 0)."""
    if sigma <= 0:
        return np.ones((1, 1), np.float32)
    radius = max(1, round(2 * sigma))
    axis = np.arange(-radius, radius + 1, dtype=np.float64)
    one_d = np.exp(-0.5 * (axis / sigma) ** 2)
    kernel = np.outer(one_d, one_d)
    return (kernel / kernel.sum()).astype(np.float32)


def _assemble(b: _Builder, params: AnomalyParams, outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    backbone = _backbone(params)
    # front-end nodes that feed the backbone come first, the rest after it
    split = next(i for i, n in enumerate(b.nodes) if _BACKBONE_INPUT in n.output) + 1
    nodes = b.nodes[:split] + list(backbone.node) + b.nodes[split:]
    image = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 1, params.height, params.width])
    graph = helper.make_graph(nodes, "edge_inspect_anomaly", [image], outputs,
                              list(backbone.initializer) + b.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edge-inspect vision.anomaly")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def with_features_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a scoring graph that also returns its patch features (for training a head on it)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, None))
    return copy


# Pooling temperatures of the classifier head, in units of the anomaly map's spread: the head
# pools the patch features around the most anomalous cells (what the defect looks like) and where
# they are (how far from the tile's border), besides the whole-image mean and max.
HEAD_TEMPERATURES = (1.0, 4.0)
HEAD_TOP_K = (5, 20)


def _border_distances(map_h: int, map_w: int) -> FloatArray:
    """[h*w, 2]: each map cell's distance to the nearest top/bottom and left/right border, as a fraction."""
    rows, cols = np.divmod(np.arange(map_h * map_w), map_w)
    return np.stack([np.minimum(rows, map_h - 1 - rows) / map_h,
                     np.minimum(cols, map_w - 1 - cols) / map_w], axis=1).astype(np.float32)


def add_classifier_head(model: onnx.ModelProto, mean: FloatArray, scale: FloatArray, weights: FloatArray,
                        bias: FloatArray) -> onnx.ModelProto:
    """Extend a scoring graph with a softmax ``probabilities`` output over the pooled features of
    :func:`pooled_features` (standardised, then one linear layer); the anomaly map stays an output."""
    b = _Builder(prefix="head_")
    map_dims = next(o for o in model.graph.output if o.name == MAP_NAME).type.tensor_type.shape.dim
    map_h, map_w = int(map_dims[1].dim_value), int(map_dims[2].dim_value)
    cells = map_h * map_w
    patches = b.op("Reshape", [FEATURES_NAME, b.const("patches_shape", [-1, cells], np.int64)], "patches")  # [C, hw]
    cell_scores = b.op("Reshape", [MAP_NAME, b.const("cells_shape", [1, cells], np.int64)], "cell_scores")
    top = b.name("top")  # the highest cells, sorted (TopK has a second output: their indices)
    b.nodes.append(helper.make_node("TopK", [cell_scores, b.const("k", [max(HEAD_TOP_K)], np.int64)],
                                    [top, b.name("top_indices")], axis=1))
    map_mean = b.op("ReduceMean", [cell_scores], "map_mean", axes=[1], keepdims=1)
    centred = b.op("Sub", [cell_scores, map_mean])
    map_std = b.op("Sqrt", [b.op("ReduceMean", [b.op("Mul", [centred, centred])], axes=[1], keepdims=1)], "map_std")
    parts = [b.op("ReduceMean", [FEATURES_NAME], "mean_pool", axes=[2, 3], keepdims=0),
             b.op("ReduceMax", [FEATURES_NAME], "max_pool", axes=[2, 3], keepdims=0),
             b.op("Reshape", [SCORE_NAME, b.const("score_shape", [1, 1], np.int64)])]
    for k in HEAD_TOP_K:
        head = b.op("Slice", [top, b.const("zero", [0], np.int64), b.const("k", [k], np.int64),
                              b.const("axis", [1], np.int64)])
        parts.append(b.op("ReduceMean", [head], f"top{k}_mean", axes=[1], keepdims=1))
    parts += [map_mean, map_std]
    spread = b.op("Add", [map_std, b.const("eps", 1e-6)])
    borders = b.const("border_distances", _border_distances(map_h, map_w))
    for temperature in HEAD_TEMPERATURES:
        logits = b.op("Div", [b.op("Mul", [cell_scores, b.const("t", temperature)]), spread])
        focus = b.op("Softmax", [logits], "focus", axis=1)  # [1, hw]
        parts.append(b.op("MatMul", [focus, b.op("Transpose", [patches], perm=[1, 0])], "focus_pool"))
        parts.append(b.op("MatMul", [focus, borders], "focus_border"))
    pooled = b.op("Concat", parts, "pooled", axis=1)
    standard = b.op("Div", [b.op("Sub", [pooled, b.const("pooled_mean", mean[None])]),
                            b.const("pooled_scale", scale[None])], "standardised")
    logits = b.op("Gemm", [standard, b.const("weights", weights), b.const("bias", bias)], "logits")
    b.op("Softmax", [logits], output=PROBABILITIES_NAME, axis=1)
    graph = helper.make_graph(
        list(model.graph.node) + b.nodes, "edge_inspect_classifier", list(model.graph.input),
        [helper.make_tensor_value_info(PROBABILITIES_NAME, TensorProto.FLOAT, [1, weights.shape[1]]),
         *[o for o in model.graph.output if o.name == MAP_NAME]],
        list(model.graph.initializer) + b.initializers)
    result = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                               producer_name="edge-inspect vision.classifier")
    result.ir_version = 8
    onnx.checker.check_model(result)
    return result


def pooled_features(patch_features: FloatArray, anomaly_map: FloatArray, score: float) -> FloatArray:
    """numpy twin of the classifier's input: patch features [C, h, w], anomaly map [h, w], score -> [3C + 7 + ...]."""
    map_h, map_w = anomaly_map.shape
    patches = patch_features.reshape(patch_features.shape[0], -1).astype(np.float64)
    cells = anomaly_map.reshape(-1).astype(np.float64)
    ranked = np.sort(cells)[::-1]
    parts = [patches.mean(axis=1), patches.max(axis=1), [score],
             *[[ranked[:k].mean()] for k in HEAD_TOP_K], [cells.mean(), cells.std()]]
    borders = _border_distances(map_h, map_w)
    for temperature in HEAD_TEMPERATURES:
        logits = temperature * cells / (cells.std() + 1e-6)
        focus = np.exp(logits - logits.max())
        focus /= focus.sum()
        parts += [patches @ focus, focus @ borders]
    return np.concatenate([np.asarray(part, np.float64).ravel() for part in parts]).astype(np.float32)


def feature_graph(params: AnomalyParams) -> onnx.ModelProto:
    b = _Builder()
    _front_end(b, params)
    out = helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, [1, "channels", *params.map_shape])
    return _assemble(b, params, [out])


def scoring_graph(params: AnomalyParams, head: SearchHead) -> onnx.ModelProto:
    b = _Builder()
    features = _front_end(b, params)
    _search(b, features, head, params)
    map_h, map_w = params.map_shape
    outputs = [helper.make_tensor_value_info(SCORE_NAME, TensorProto.FLOAT, [1]),
               helper.make_tensor_value_info(MAP_NAME, TensorProto.FLOAT, [1, map_h, map_w])]
    return _assemble(b, params, outputs)
