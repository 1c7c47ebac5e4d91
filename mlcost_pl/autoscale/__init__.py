"""Autoscaling that pays: capacity at the SLO, a replay simulator of the Kubernetes HPA and KEDA over a traffic trace,
and the search for the cheapest setting that keeps SLO misses under a limit.

Pure logic (numpy, no torch, no Lightning); ``recipes.autoscale`` is the command-line adapter.
"""

from mlcost_pl.autoscale.capacity import Capacity, load_capacity, model_version
from mlcost_pl.autoscale.hpa import Behavior, HPAController, ScalingPolicy, ScalingRules
from mlcost_pl.autoscale.simulate import HPAPolicy, KEDAPolicy, SimResult, StaticPolicy, classic_hpa, keda_policy, simulate
from mlcost_pl.autoscale.trace import Trace, bundled_trace, load_trace, parse_trace, write_trace

__all__ = [
    "Behavior",
    "Capacity",
    "HPAController",
    "HPAPolicy",
    "KEDAPolicy",
    "ScalingPolicy",
    "ScalingRules",
    "SimResult",
    "StaticPolicy",
    "Trace",
    "bundled_trace",
    "classic_hpa",
    "keda_policy",
    "load_capacity",
    "load_trace",
    "model_version",
    "parse_trace",
    "simulate",
    "write_trace",
]
