"""Transfer-learning logic with no Trainer: freeze/unfreeze modules, unfreeze schedules, optimizer surgery, feature cache.

The Lightning adapter is :class:`mlcost_pl.callbacks.FreezeBackbone`.
"""

from mlcost_pl.finetune.feature_cache import FeatureCache
from mlcost_pl.finetune.freezing import count_parameters, freeze, resolve_modules, split_groups, unfreeze
from mlcost_pl.finetune.optim import add_param_group
from mlcost_pl.finetune.schedule import UnfreezeSchedule
from mlcost_pl.finetune.weights import save_weights

__all__ = [
    "FeatureCache",
    "UnfreezeSchedule",
    "add_param_group",
    "count_parameters",
    "freeze",
    "resolve_modules",
    "save_weights",
    "split_groups",
    "unfreeze",
]
