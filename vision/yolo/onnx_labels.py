"""Reorder an exported classifier's probabilities to the manifest's label order with one ONNX Gather."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

PROBABILITIES_NAME = "probabilities"


def reorder_outputs(onnx_path: Path, order: list[int]) -> str:
    """Append ``probabilities = output[:, order]`` to the graph in place; returns the new output's name.

    ultralytics numbers classes by sorted folder name; our manifests put ``good`` first."""
    model = onnx.load(str(onnx_path))
    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"{onnx_path}: expected one output (class probabilities), found {len(graph.output)}")
    source = graph.output[0]
    graph.initializer.append(helper.make_tensor("label_order", TensorProto.INT64, [len(order)], order))
    graph.node.append(helper.make_node("Gather", [source.name, "label_order"], [PROBABILITIES_NAME], axis=1,
                                       name="reorder_labels"))
    graph.output.remove(source)
    graph.output.append(helper.make_tensor_value_info(PROBABILITIES_NAME, TensorProto.FLOAT, [1, len(order)]))
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return PROBABILITIES_NAME
