"""Serving: adaptive batching, prediction cache, cost metrics (pure) and the LitServe adapter.

Imported lazily, so ``from mlcost_pl.serve import AIMDBatchController`` imports neither LitServe nor onnxruntime.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "AIMDBatchController": "mlcost_pl.serve.batching",
    "AdaptiveBatchingLoop": "mlcost_pl.serve.server",
    "LRUCache": "mlcost_pl.serve.cache",
    "ModelAPI": "mlcost_pl.serve.server",
    "ModelServer": "mlcost_pl.serve.server",
    "PredictionCache": "mlcost_pl.serve.cache",
    "RedisTier": "mlcost_pl.serve.cache",
    "ServeSettings": "mlcost_pl.serve.server",
    "ServedModel": "mlcost_pl.serve.model",
    "build_server": "mlcost_pl.serve.server",
    "load_export": "mlcost_pl.serve.model",
    "serve": "mlcost_pl.serve.server",
    "tensor_digest": "mlcost_pl.serve.cache",
    "usd_per_1k_predictions": "mlcost_pl.serve.metrics",
    "DeploySettings": "mlcost_pl.serve.deploy",
    "k8s_manifests": "mlcost_pl.serve.deploy",
    "write_k8s_manifests": "mlcost_pl.serve.deploy",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
