"""AttemptSteps: what one ``trainer.fit`` call trained, as opposed to the run's totals restored from a checkpoint."""

from __future__ import annotations

import time

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override


class AttemptSteps(Callback):
    """Record the optimizer step a fit started from (after any resume) and the seconds spent in the training loop.

    ``recipes.train`` adds it to report samples/s and wall time of *this command*: after a resume,
    ``trainer.global_step`` counts the steps of earlier attempts too. Not part of the public API.

    Examples:
        >>> cb = AttemptSteps()
        >>> cb.start_step, cb.train_seconds()
        (None, 0.0)
    """

    def __init__(self) -> None:
        self.start_step: int | None = None  # None: the training loop never started (e.g. nothing left to train)
        self._t0: float | None = None
        self._t1: float | None = None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = trainer.global_step  # restored from the checkpoint by now
        self._t0, self._t1 = time.perf_counter(), None

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._t1 = time.perf_counter()

    def steps(self, trainer: Trainer) -> int:
        """Optimizer steps taken by this fit."""
        return 0 if self.start_step is None else max(0, trainer.global_step - self.start_step)

    def train_seconds(self) -> float:
        """Seconds from the start to the end of the training loop of this fit (0.0 if it never started)."""
        if self._t0 is None:
            return 0.0
        return (self._t1 or time.perf_counter()) - self._t0
