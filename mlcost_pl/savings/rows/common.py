"""Helpers shared by the savings rows: quiet Lightning, the reproduce command, a step timer."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Only the recipe's progress lines while a row runs: Lightning's banners and litdata's cache notes are raised to
    WARNING, and put back afterwards, so a row called from a test or a notebook leaves logging as it found it (Lightning
    is imported first: its import sets its loggers to INFO)."""
    import lightning.pytorch  # noqa: F401

    names = ("lightning.pytorch", "lightning.fabric", "litdata")
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def quietly(measure: Callable[[RunContext], Any]) -> Callable[[RunContext], Any]:
    """Decorate a row's ``measure`` to run under :func:`quiet`."""

    @functools.wraps(measure)
    def wrapper(ctx: RunContext) -> Any:
        with quiet():
            return measure(ctx)

    return wrapper


def overrides() -> str:
    """The command line's overrides (empty outside a Hydra run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return " ".join(o for o in HydraConfig.get().overrides.task if not o.startswith("savings.rows"))
    except ValueError:
        return ""


def rerun(key: str) -> str:
    """The command that re-runs only row ``key`` with this run's overrides (the list quoted: zsh would glob it)."""
    return " ".join(["uv run python -m recipes.savings", overrides(), f"'savings.rows=[{key}]'"]).replace("  ", " ")


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


@dataclass
class RunContext:
    """What rows of one savings run share: a scratch folder (removed by the recipe at the end), the configured model
    after a short fit, and its export. Built lazily, so a run of only some rows pays only for what they need.

    Args:
        cfg: the composed savings config (the train groups plus ``savings``).
        price: the resolved instance price (``None`` for an unknown instance).
        tmp: scratch folder for this run.
    """

    cfg: Any
    price: Any
    tmp: Path
    cache: dict[str, Any] = field(default_factory=dict)

    def trainer(self, **overrides: Any) -> Any:
        """The configured Trainer (``cfg.trainer``) for a measurement: no logger, checkpointing, sanity check, progress
        bar or model summary, its root in the scratch folder; ``overrides`` (steps, callbacks, precision) on top."""
        from hydra.utils import instantiate

        quiet_run = {"logger": False, "callbacks": [], "num_sanity_val_steps": 0, "enable_checkpointing": False,
                     "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(self.tmp)}
        return instantiate(self.cfg.trainer, **{**quiet_run, **overrides})

    def fitted(self) -> tuple[Any, Any, int]:
        """``(model, datamodule, steps)``: the configured model after a short fit on the configured data (30 steps
        quick, 200 otherwise), seeded; fitted once per run."""
        if "fitted" not in self.cache:
            import lightning as L
            from hydra.utils import instantiate

            cfg = self.cfg
            L.seed_everything(int(cfg.seed), verbose=False)
            datamodule = instantiate(cfg.data)
            model = instantiate(cfg.model, num_classes=datamodule.num_classes)
            steps = 30 if cfg.savings.quick else 200
            trainer = self.trainer(max_steps=steps, max_epochs=-1, limit_val_batches=0)
            trainer.fit(model, datamodule=datamodule)
            self.cache["fitted"] = (model.eval(), datamodule, steps)
        return self.cache["fitted"]

    def exported(self) -> tuple[Path, dict[str, Any]]:
        """``(export folder, export report)``: :func:`mlcost_pl.export.export` of :meth:`fitted` (ONNX fp32 + INT8,
        accuracy-gated, priced at the instance's on-demand $/h); exported once per run."""
        if "exported" not in self.cache:
            from mlcost_pl.errors import UserInputError
            from mlcost_pl.export import export

            if self.price is None:
                raise UserInputError("savings.instance: no price for $ per million predictions")
            model, datamodule, _ = self.fitted()
            out = self.tmp / "export"
            report = export(model, datamodule, out, price_per_hour=self.price.on_demand, batch_sizes=(1, 32),
                            latency_iters=5 if self.cfg.savings.quick else 20)
            self.cache["exported"] = (out, report)
        return self.cache["exported"]
