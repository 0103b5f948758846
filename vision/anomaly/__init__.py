"""Good-only anomaly detection for images: PatchCore-style memory bank in one ONNX graph."""

from vision.anomaly.images import SkippedFile, read_training_image, read_training_images
from vision.anomaly.params import AnomalyParams
from vision.anomaly.train import MIN_GOOD_IMAGES, TrainingDataError, TrainingReport, train_anomaly_model

__all__ = [
    "MIN_GOOD_IMAGES",
    "AnomalyParams",
    "SkippedFile",
    "TrainingDataError",
    "TrainingReport",
    "read_training_image",
    "read_training_images",
    "train_anomaly_model",
]
