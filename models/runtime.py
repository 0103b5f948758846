"""onnxruntime sessions: one per model, thread count from config, warmed up at load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.manifest import AudioInput, ImageInput, Manifest, ManifestError, read_manifest, verify_onnx


def create_session(onnx_path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session whose worker threads sleep when idle (spinning slows numpy work beside it)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own opaque exception types
        raise ManifestError(f"{onnx_path}: onnxruntime cannot load this model: {exc}") from exc


@dataclass
class LoadedModel:
    """A verified, warmed-up model version ready to run."""

    manifest: Manifest
    folder: Path
    session: ort.InferenceSession
    load_ms: float = 0.0
    output_names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def run(self, tensor: npt.NDArray[np.generic]) -> dict[str, npt.NDArray[np.generic]]:
        """Run the model on one input tensor; returns role -> array as named in the manifest."""
        values = self.session.run(self.output_names, {self.manifest.input.tensor_name: tensor})
        roles = list(self.manifest.outputs)
        return {role: np.asarray(value) for role, value in zip(roles, values, strict=True)}

    def warm_up(self, runs: int = 2) -> None:
        tensor = blank_input(self.manifest)
        for _ in range(runs):
            self.run(tensor)


def blank_input(manifest: Manifest) -> npt.NDArray[np.generic]:
    """A zero tensor of the model's input shape, for warm-up and self-tests."""
    spec = manifest.input
    if isinstance(spec, ImageInput):
        shape = (1, spec.channels, spec.height, spec.width) if spec.layout == "NCHW" else (
            1, spec.height, spec.width, spec.channels)
        return np.zeros(shape, dtype=np.uint8 if spec.dtype == "uint8" else np.float32)
    assert isinstance(spec, AudioInput)
    raise ManifestError("audio models provide their own warm-up input via the acoustic package")


def load_model(folder: Path, threads: int = 1, warm_up: bool = True) -> LoadedModel:
    """Read the manifest, verify the ONNX sha256, open a session and warm it up."""
    started = time.perf_counter()
    manifest = read_manifest(folder)
    onnx_path = verify_onnx(folder, manifest)
    session = create_session(onnx_path, threads)
    available = {o.name for o in session.get_outputs()}
    missing = [name for name in manifest.outputs.values() if name not in available]
    if missing:
        raise ManifestError(
            f"{folder}: the manifest names outputs {missing} that the ONNX model does not have "
            f"(it has {sorted(available)})"
        )
    inputs = {i.name for i in session.get_inputs()}
    if manifest.input.tensor_name not in inputs:
        raise ManifestError(
            f"{folder}: the manifest's input '{manifest.input.tensor_name}' is not an input of the ONNX "
            f"model (it has {sorted(inputs)})"
        )
    model = LoadedModel(manifest, folder, session, output_names=list(manifest.outputs.values()))
    if warm_up and isinstance(manifest.input, ImageInput):
        try:
            model.warm_up()
        except Exception as exc:
            raise ManifestError(f"{folder}: the model fails on a blank input of the manifest's shape: {exc}") from exc
    model.load_ms = (time.perf_counter() - started) * 1000.0
    return model
