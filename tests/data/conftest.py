"""Fixtures of the data tests: one optimized digits dataset per session (litdata, zstd, uint8 pixels)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def digits_optimized(tmp_path_factory):
    """Digits at 8x8 written by ``optimize_datamodule`` to a local folder; yields ``(uri, manifest)``."""
    from mlcost_pl.data.digits import DigitsDataModule
    from mlcost_pl.data.optimize import optimize_datamodule

    out = tmp_path_factory.mktemp("optimized") / "digits"
    manifest = optimize_datamodule(DigitsDataModule(image_size=8, batch_size=32), str(out), chunk_bytes="16KB")
    return str(out), manifest
