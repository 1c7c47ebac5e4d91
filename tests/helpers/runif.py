"""``RunIf``: skip a test with a reason when the machine lacks what it needs (after Lightning's helper)."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch


def RunIf(*, cuda: bool = False, min_cuda_gpus: int = 0, linux: bool = False, module: str | None = None):  # noqa: N802
    """Return a ``skipif`` mark; combine with ``@pytest.mark.gpu`` for GPU tests."""
    reasons = []
    if (cuda or min_cuda_gpus) and not torch.cuda.is_available():
        reasons.append("CUDA is not available")
    elif min_cuda_gpus and torch.cuda.device_count() < min_cuda_gpus:
        reasons.append(f"needs {min_cuda_gpus} CUDA GPUs")
    if linux and not sys.platform.startswith("linux"):
        reasons.append("needs Linux")
    if module and importlib.util.find_spec(module) is None:
        reasons.append(f"needs the {module} package")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "runs")
