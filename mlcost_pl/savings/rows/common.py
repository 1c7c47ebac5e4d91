"""Helpers shared by the savings rows: quiet Lightning, the reproduce command, a step timer."""

from __future__ import annotations

import logging
import time
from typing import Any


def quiet() -> None:
    """The progress lines, not each Trainer's banner (call after importing Lightning: its import sets INFO)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def overrides() -> str:
    """The command line's overrides (empty outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(o for o in HydraConfig.get().overrides.task if not o.startswith("savings.rows"))
    except ValueError:
        return ""


def rerun(key: str) -> str:
    """The command that re-runs only row ``key`` with this run's overrides."""
    return " ".join(["uv run python -m recipes.savings", overrides(), f"savings.rows=[{key}]"]).replace("  ", " ")


def step_timer(warmup: int) -> Any:
    """A Lightning callback recording each training step's seconds after ``warmup`` steps (in ``.times``)."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t = 0.0

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            self._t = time.perf_counter()

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step > warmup:
                self.times.append(time.perf_counter() - self._t)

    return StepTimer()
