"""Supervised defect classifier: a light linear head on the pooled backbone features."""

from vision.classifier.train import MIN_IMAGES_PER_LABEL, train_classifier_model

__all__ = ["MIN_IMAGES_PER_LABEL", "train_classifier_model"]
