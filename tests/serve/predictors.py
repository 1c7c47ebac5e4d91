"""Picklable predictors for server tests (imported by LitServe's spawned worker, so: numpy only)."""

from __future__ import annotations

import time

import numpy as np

LABELS = ["cat", "dog", "fish"]
BOOM, SLOW = 666.0, 777.0


class ScriptedPredictor:
    """Three logits from the sample mean; an input holding 666 raises (a model error), 777 sleeps 0.5 s."""

    def load(self) -> ScriptedPredictor:
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1)
        if (flat == BOOM).any():
            raise RuntimeError("scripted model failure")
        if (flat == SLOW).any():
            time.sleep(0.5)
        m = flat.mean(axis=1)
        return np.stack([m, 2 * m, -m], axis=1).astype(np.float32)
