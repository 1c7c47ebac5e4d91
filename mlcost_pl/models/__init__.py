"""Bundled models."""

from mlcost_pl.models.backbones import TinyCNN, available_backbones, build_backbone
from mlcost_pl.models.image_classifier import ImageClassifier

__all__ = ["ImageClassifier", "TinyCNN", "available_backbones", "build_backbone"]
