"""Serving: adaptive batching, prediction cache, cost metrics (pure) and the LitServe adapter.

Imported lazily, so ``from mlcost_pl.serve import AIMDBatchController`` imports neither LitServe nor onnxruntime.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "DeploySettings": "mlcost_pl.serve.deploy",
    "k8s_manifests": "mlcost_pl.serve.deploy",
    "write_k8s_manifests": "mlcost_pl.serve.deploy",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
