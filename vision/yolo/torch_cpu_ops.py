"""Make the CUDA-built torchvision wheel importable next to CPU-only torch (training extra only).

``torchvision==0.28.0`` from the registry is a CUDA build: its compiled ops (``torchvision/_C.so``)
do not load on the CPU build of torch, and importing torchvision then fails with
``operator torchvision::nms does not exist``. ultralytics imports torchvision, so before that
happens :func:`install` defines ``torchvision::nms`` (and the ``qnms`` schema torchvision's import
registers a fake kernel for) with a pure-torch CPU kernel. Where the compiled ops do load, it does
nothing. Only ``nms`` is provided; the other compiled ops (roi_align, deform_conv2d, ...) stay
unavailable, which classification training never uses.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

_library: torch.library.Library | None = None  # kept alive: dropping it unregisters the ops


def nms_cpu(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's NMS: indices of the kept boxes (x1, y1, x2, y2), by decreasing score; a box is
    dropped when its IoU with a kept, higher-scoring box is greater than ``iou_threshold``."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    ordered = boxes[order].to(torch.float64)
    x1, y1, x2, y2 = ordered.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep: list[int] = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        width = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        height = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        overlap = width * height
        suppressed |= overlap / (areas[i] + areas - overlap) > iou_threshold
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def _compiled_ops_load() -> bool:
    """True if torchvision's own compiled ops load with this torch (then no shim is needed)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    for folder in spec.submodule_search_locations:
        for library in Path(folder).glob("_C*.so"):
            try:
                torch.ops.load_library(str(library))
                return True
            except (OSError, RuntimeError):
                return False
    return False


def install() -> bool:
    """Make ``import torchvision`` and ``torchvision.ops.nms`` work; True if the shim is in use.

    Idempotent. Must run before anything imports torchvision (ultralytics does)."""
    global _library
    if _library is None:
        if "torchvision" in sys.modules:
            import torchvision.extension

            if torchvision.extension._has_ops():
                return False
            raise RuntimeError("torchvision was imported before vision.yolo.torch_cpu_ops.install(); "
                               "call install() first")
        if _compiled_ops_load():
            return False
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.impl("nms", nms_cpu, "CPU")
        _library = library
    import torchvision.ops.boxes

    # torchvision.ops.nms refuses to run without its compiled library; ours now provides nms
    torchvision.ops.boxes._assert_has_ops = _nms_available
    return True


def _nms_available() -> None:
    """Stands in for torchvision's check that its compiled ops are loaded (used by box ops only)."""
