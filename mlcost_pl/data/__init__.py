"""Bundled LightningDataModules, litdata streaming of optimized datasets, and the feature store.

Imported lazily, so the pure modules (``encodings``, ``manifest``, ``remote``) load without Lightning.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "CIFAR10DataModule": "mlcost_pl.data.cifar10",
    "DigitsDataModule": "mlcost_pl.data.digits",
    "ImageFolderDataModule": "mlcost_pl.data.imagefolder",
    "StreamingDataModule": "mlcost_pl.data.streaming",
    "FeatureStore": "mlcost_pl.data.feature_store",
    "optimize_datamodule": "mlcost_pl.data.optimize",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
