"""Shared fixtures."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest and a subprocess both run.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()


@pytest.fixture
def image_folder(tmp_path_factory):
    """A tiny ``root/<class>/<image>.png`` tree of real digits images (3 classes x 12 images)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("images")
    digits = load_digits()
    for cls in (0, 1, 2):
        (root / f"class_{cls}").mkdir()
        imgs = digits.images[digits.target == cls][:12]
        for i, img in enumerate(imgs):
            Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((16, 16)).save(root / f"class_{cls}" / f"{i}.png")
    return root
