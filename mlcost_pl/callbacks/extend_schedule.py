"""ExtendSchedule: train a resumed run longer, with its LR schedule stretched to the new length."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override


def stretch_cosine(scheduler: Any, t_max: int) -> list[float] | None:
    """Give a ``CosineAnnealingLR`` a new ``T_max`` and put each group's LR on the stretched curve at the current step.

    Returns the new LRs, or None when ``scheduler`` has no ``T_max`` (it is left as it is).

    Examples:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2)
        >>> for _ in range(2):
        ...     opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 6)  # the end of a 2-epoch schedule
        0.0
        >>> [round(lr, 6) for lr in stretch_cosine(sched, 4)]  # the middle of a 4-epoch one
        [0.5]
    """
    if not hasattr(scheduler, "T_max"):
        return None
    scheduler.T_max = int(t_max)
    epoch = scheduler.last_epoch
    lrs = []
    for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        eta_min = scheduler.eta_min
        lr = eta_min + (base - eta_min) * (1 + math.cos(math.pi * min(epoch, t_max) / t_max)) / 2
        group["lr"] = lr
        lrs.append(lr)
    scheduler._last_lr = list(lrs)
    return lrs


class ExtendSchedule(Callback):
    """Extend a resumed run to ``max_epochs``: stretch its restored cosine LR schedule to the new length.

    A run resumed with a larger ``max_epochs`` restores its scheduler as it was: a cosine schedule that already reached
    its end would keep training at its minimum LR (0.0). This callback, added by ``recipes.train extend_to_epochs=N``,
    sets ``T_max`` to the new length after the restore and moves each LR onto the stretched curve. Other schedulers
    are left as restored, with a warning.

    Args:
        max_epochs: the new length in epochs (what ``T_max`` counts for an epoch-interval scheduler; step-interval
            schedulers get ``trainer.estimated_stepping_batches``).

    Raises:
        ValueError: ``max_epochs`` is not a positive integer.

    Logged metrics: none (``lr-*`` from LearningRateMonitor shows the new schedule).

    Examples:
        >>> cb = ExtendSchedule(max_epochs=12)
        >>> cb.max_epochs
        12
    """

    def __init__(self, max_epochs: int) -> None:
        if not isinstance(max_epochs, int) or isinstance(max_epochs, bool) or max_epochs < 1:
            raise ValueError(f"max_epochs must be a positive integer, got {max_epochs!r}")
        self.max_epochs = max_epochs

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The optimizers and schedulers are restored from the checkpoint by now.
        for config in trainer.lr_scheduler_configs:
            length = self.max_epochs if config.interval == "epoch" else int(trainer.estimated_stepping_batches)
            lrs = stretch_cosine(config.scheduler, length)
            if lrs is None:
                rank_zero_warn(f"ExtendSchedule: {type(config.scheduler).__name__} continues from its restored state "
                               "(only CosineAnnealingLR is stretched)")
            else:
                rank_zero_info(f"ExtendSchedule: cosine schedule stretched to {length} {config.interval}s; "
                               f"LR now {', '.join(f'{lr:.3g}' for lr in lrs)}")
