"""The manifest that travels with every ONNX model: what it is, how to feed it, how to decide.

A model folder is ``<root>/<name>/<version>/`` holding ``model.onnx`` and ``manifest.json``.
The manifest carries everything needed to score exactly as at training time: the input
preprocessing, the meaning of the outputs, the labels and the decision threshold.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"  # also a folder name: no path separators, no '..' start


def model_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a model, or None when it can."""
    if re.fullmatch(MODEL_NAME_PATTERN, name):
        return None
    return (f"'{name}' cannot name a model: use at most 64 lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (e.g. tile-anomaly)")

ModelKind = Literal["vision-anomaly", "vision-classifier", "acoustic-anomaly", "acoustic-classifier"]


class ManifestError(Exception):
    """A manifest that is missing, unreadable or inconsistent with its ONNX file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageInput(_Strict):
    """How a decoded 8-bit image becomes the model's input tensor."""

    type: Literal["image"] = "image"
    tensor_name: str = Field("image", description="Name of the ONNX input.")
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[1, 3] = Field(description="1 = grey, 3 = RGB (grey images are replicated).")
    resize: Literal["stretch", "fit", "short-side-crop"] = Field(
        "stretch",
        description=(
            "How the image is fitted to width x height: 'stretch' scales each axis to size; 'fit' keeps "
            "the aspect ratio (the longer side fills the input) and fills the rest by mirroring the image; "
            "'short-side-crop' (square inputs) keeps the aspect ratio, scales the shorter side to the size "
            "and cuts out the centre, as torchvision's Resize(size) + CenterCrop(size) (ultralytics classifiers)."
        ),
    )
    interpolation: Literal["area", "linear", "cubic", "pil-bilinear"] = Field(
        "area", description="OpenCV's INTER_AREA, INTER_LINEAR or INTER_CUBIC, or Pillow's BILINEAR filter "
                            "(antialiased when shrinking, as torchvision resizes PIL images).")
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8"] = "float32"
    scale: float = Field(1.0 / 255.0, description="Multiplied with the 0..255 pixel values first.")
    mean: list[float] = Field(default_factory=lambda: [0.0], description="Subtracted after scaling, per channel.")
    std: list[float] = Field(default_factory=lambda: [1.0], description="Divided by after mean, per channel.")

    @model_validator(mode="after")
    def _square_for_crop(self) -> ImageInput:
        if self.resize == "short-side-crop" and self.height != self.width:
            raise ValueError(f"resize 'short-side-crop' needs a square input, not {self.width}x{self.height}")
        return self


class AudioInput(_Strict):
    """How a waveform becomes the model's input tensor (log-mel features)."""

    type: Literal["audio"] = "audio"
    tensor_name: str = "features"
    sample_rate: int = Field(gt=0)
    window_s: float = Field(gt=0, description="Length of audio judged at once, in seconds.")
    features: dict[str, Any] = Field(default_factory=dict, description="Feature parameters (n_mels, n_fft, hop, ...).")


class TrainingInfo(_Strict):
    """Where a model came from: data, duration, parent, tool."""

    data: dict[str, Any] = Field(default_factory=dict, description="Summary of the training data (folders, counts).")
    duration_s: float | None = None
    parent_version: int | None = None
    tool: str = Field("", description="The code that built it, e.g. 'edge-inspect train vision'.")
    params: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Strict):
    """Everything the runtime needs to know about one model version."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    kind: ModelKind
    description: str = ""
    onnx_file: str = ONNX_FILE
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: ImageInput | AudioInput = Field(discriminator="type")
    outputs: dict[str, str] = Field(
        description=(
            "Role -> ONNX output name. Anomaly models: 'score' (higher = more anomalous), optional "
            "'anomaly_map'. Classifiers: 'probabilities' (softmax over labels)."
        )
    )
    labels: list[str] = Field(min_length=2, description="Class names; anomaly models: [good, anomalous].")
    ok_labels: list[str] = Field(min_length=1, description="Labels that mean the part is good.")
    threshold: float = Field(description="Decision threshold on the score: score >= threshold -> NG.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    training: TrainingInfo = Field(default_factory=TrainingInfo)

    @property
    def is_anomaly(self) -> bool:
        return self.kind.endswith("anomaly")

    @property
    def modality(self) -> Literal["vision", "acoustic"]:
        return "vision" if self.kind.startswith("vision") else "acoustic"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """Read and validate ``folder/manifest.json`` (without checking the ONNX hash)."""
    path = folder / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"{path}: manifest is missing") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: manifest is unreadable: {exc}") from exc
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise ManifestError(f"{path}: invalid manifest: {problems}") from exc


def verify_onnx(folder: Path, manifest: Manifest) -> Path:
    """Return the ONNX path after checking that it exists and matches the manifest's sha256."""
    onnx_path = folder / manifest.onnx_file
    if not onnx_path.is_file():
        raise ManifestError(f"{onnx_path}: model file is missing (manifest {folder / MANIFEST_FILE})")
    actual = sha256_of(onnx_path)
    if actual != manifest.onnx_sha256:
        raise ManifestError(
            f"{onnx_path}: sha256 {actual[:12]}... does not match the manifest's {manifest.onnx_sha256[:12]}...; "
            "the file is corrupt or was replaced. Restore it, or retrain/re-register the model."
        )
    return onnx_path


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    path = folder / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
