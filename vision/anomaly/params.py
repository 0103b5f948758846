"""The knobs of the good-only anomaly model, kept in one place and recorded in the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Backbone outputs (see models/backbones/lite0_features.json) and their strides.
LAYER_STRIDES = {"stage2_s4": 4, "stage3_s8": 8, "stage4_s16": 16, "stage5_s16": 16}


@dataclass(frozen=True)
class AnomalyParams:
    """How images become patch features, how large the memory bank is, how scores are calibrated."""

    height: int = 256  # model input, multiple of 32
    width: int = 512  # tiles are often wide with vertical grain: keep horizontal detail
    resize: Literal["stretch", "fit"] = "stretch"  # see models.manifest.ImageInput.resize
    layers: tuple[str, ...] = ("stage3_s8", "stage5_s16")  # the first sets the map resolution
    map_stride_override: int = 16  # map stride (0 = the first layer's); finer layers are max-pooled
    pad: int = 0  # reflect padding around the image before the backbone, cropped off after
    aggregate: int = 3  # local neighbourhood (k x k mean) of each feature map
    standardize: bool = True  # per-image brightness/contrast normalisation inside the graph
    projection_dims: int = 32  # PCA dimensions of the patch features (0 = keep all)
    bank_size: int = 20000  # memory bank patches after coreset reduction (search time grows with it)
    coreset_dims: int = 24  # dimensions used to pick the coreset
    coreset: str = "greedy"  # "greedy" (approximate k-centre) or "random" (the textbook baseline)
    position_norm: bool = True  # normalise each map cell by the good parts' typical distance there
    flips: bool = True  # add horizontally/vertically flipped copies of the good images
    flip_below: int = 50  # ... only while there are fewer good images than this
    # Copies lit by a linear ramp across the part (left, right, top or bottom brighter by this share,
    # the opposite side darker), as parts sit differently under the lights; 0 = none ...
    lighting_ramp: float = 0.35
    lighting_below: int = 200  # ... only while there are fewer good images than this
    # Per-position Gaussians of the good features (vision/anomaly/gaussian.py), blended into the
    # normalised map with this weight (0 = the bank alone)
    position_gaussian: float = 0.4
    position_gaussian_shrinkage: float = 0.1  # share of the mean variance added to each covariance
    position_gaussian_dims: int = 128  # PCA dimensions of the features the Gaussians model (own projection)
    map_sigma: float = 1.0  # Gaussian smoothing of the anomaly map (in map cells)
    calibration_images: int = 120  # at most this many leave-one-out images for calibration
    # Each calibration image is scored without its own patches *and* those of its most similar
    # training images (at most this many, and one per 20 images in the set): a part photographed
    # twice, or under several lights, would otherwise calibrate the threshold for parts already
    # seen, and unseen parts would be rejected far more often than the calibration promised.
    calibration_exclude_similar: int = 1
    calibration_false_reject: float = 0.05  # the default target: at most this share of new good parts rejected
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def map_stride(self) -> int:
        return self.map_stride_override or LAYER_STRIDES[self.layers[0]]

    @property
    def map_shape(self) -> tuple[int, int]:
        return self.height // self.map_stride, self.width // self.map_stride

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["layers"] = list(self.layers)
        return values
