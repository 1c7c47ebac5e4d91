"""Multi-node and elastic training: the torchrun environment, global-batch accumulation, DDP comm hooks, scaling model.

Imported lazily: ``elastic``, ``comm_hooks`` and ``scaling`` are pure (no Lightning); ``strategy`` imports Lightning.
"""

from __future__ import annotations

from mlcost_pl.utils.lazy import lazy_exports

_EXPORTS = {
    "ElasticTopology": "mlcost_pl.distributed.elastic",
    "accumulation_for": "mlcost_pl.distributed.elastic",
    "COMM_HOOKS": "mlcost_pl.distributed.comm_hooks",
    "comm_hook": "mlcost_pl.distributed.comm_hooks",
    "CompressedDDPStrategy": "mlcost_pl.distributed.strategy",
    "ScalingModel": "mlcost_pl.distributed.scaling",
    "ring_allreduce_seconds": "mlcost_pl.distributed.scaling",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
