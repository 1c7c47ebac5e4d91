"""A TinyCNN trained in-process on 8x8 digits (seconds), shared by the export tests."""

from __future__ import annotations

import copy

import pytest
import torch

from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier
from tests.helpers.plain_fit import plain_fit


def train_tiny(epochs: int = 12, seed: int = 0, model: torch.nn.Module | None = None) -> tuple[ImageClassifier, DigitsDataModule]:
    """A plain training loop (much cheaper than a Trainer for a test fixture); reaches ~0.97 val accuracy."""
    dm = DigitsDataModule(image_size=8, batch_size=64)
    torch.manual_seed(seed)
    model = model or ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)
    # a tiny model: one thread is faster, and much faster when the cores are shared
    return plain_fit(model, dm, epochs, lr=1e-2, seed=seed, threads=1), dm


@pytest.fixture(scope="session")
def _trained_once():
    return train_tiny()


@pytest.fixture
def trained(_trained_once):
    """``(model, datamodule)``: a fresh copy per test of the session's trained TinyCNN."""
    model, dm = _trained_once
    return copy.deepcopy(model), dm


def val_accuracy(model: torch.nn.Module, dm: DigitsDataModule) -> float:
    dm.setup("validate")
    correct = total = 0
    with torch.inference_mode():
        for x, y in dm.val_dataloader():
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


class ShiftedDigits(DigitsDataModule):
    """Digits with the training split scaled by ``calibration_scale``: a deliberately bad calibration set."""

    def __init__(self, calibration_scale: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calibration_scale = calibration_scale

    def train_dataloader(self):
        return [(x * self.calibration_scale, y) for x, y in super().train_dataloader()]


def CalibrationShift(dm: DigitsDataModule, scale: float) -> ShiftedDigits:  # noqa: N802 - reads like a class
    """``dm``'s data with its training split scaled by ``scale``."""
    return ShiftedDigits(scale, image_size=dm.hparams.image_size, batch_size=dm.batch_size)


class ConvOnly(torch.nn.Module):
    """Two convolutions and a pooled 1x1-conv classifier: every weight layer sees a calibrated activation range."""

    def __init__(self) -> None:
        super().__init__()
        import torchmetrics

        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 10, 1),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        )
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes=10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
