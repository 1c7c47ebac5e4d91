"""The one implementation of RNG state capture and restore (torch CPU, CUDA, NumPy, Python).

The captured dict holds only tensors, ints, floats, strings and tuples, so a checkpoint that carries it still loads
with ``torch.load(weights_only=True)``. SpotCheckpoint saves it once per checkpoint; PreemptionHandler re-applies it
at the resumed step; BatchSizeSearch uses it to leave the RNGs as it found them.
"""

from __future__ import annotations

import random
from typing import Any

import torch


def capture_rng_states() -> dict[str, Any]:
    """torch, CUDA (when initialized), NumPy and Python RNG states, in a ``weights_only``-safe form.

    Example:
        >>> state = capture_rng_states()
        >>> a = torch.rand(1); restore_rng_states(state); torch.equal(a, torch.rand(1))
        True
    """
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch.cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_states`; entries that are missing are left alone (older checkpoints load)."""
    import numpy as np

    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "torch.cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch.cuda"])
    if "numpy" in states:
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
