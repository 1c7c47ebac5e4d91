"""BatchSizeSearch: find the batch size at fit start (largest that fits, or the fastest), DDP-safe and cached."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr
from lightning_utilities.core.apply_func import apply_to_collection
from typing_extensions import override

from mlcost_pl.errors import UserInputError
from mlcost_pl.rightsizing.cache import SearchCache, cache_key, model_signature
from mlcost_pl.rightsizing.probe import StepProbe, device_name, probing, scale_learning_rates
from mlcost_pl.utils.rng import capture_rng_states, restore_rng_states
from mlcost_pl.rightsizing.search import (
    SearchResult,
    expected_saving,
    explain_choice,
    fit_global_batch,
    max_fit_search,
    min_over_ranks,
    throughput_search,
)

MODES = ("max_fit", "throughput")
LR_SCALINGS = ("none", "linear", "sqrt")


class BatchSizeSearch(Callback):
    """Right-size the per-device batch at fit start: the largest that fits (``max_fit``) or the fastest (``throughput``).

    Each trial runs one real training step (forward, backward, optimizer step, under the trainer's precision) on a
    batch tiled from the first training batch. ``max_fit`` grows the batch exponentially until a trial runs out of
    memory, then bisects, and takes ``safety_margin`` off the answer. Out of memory means ``torch.OutOfMemoryError``
    (or a Lightning-recognised OOM ``RuntimeError``), or, when ``max_memory_gb`` is set, a peak above that budget:
    ``torch.cuda.max_memory_allocated`` on CUDA, :func:`mlcost_pl.rightsizing.measure_step_memory` on CPU (parameters,
    gradients, optimizer state and saved activations of the step). ``throughput`` measures samples/s at
    ``init_batch_size * 2**k`` (``warmup_steps`` untimed, then the median of ``measure_steps`` timed steps, CUDA synchronized) and picks the
    smallest batch within ``throughput_tolerance`` of the best.

    Model parameters and buffers, gradients, optimizer state, RNG states and module train/eval modes are restored
    bit-exactly after probing; logging is disabled while probing. Under DDP every rank searches on its own device and
    all ranks take the minimum. Results are cached on disk per (model signature, device, per-sample input shape,
    precision, optimizer, settings), so a re-run skips the search; the chosen size is also saved in the checkpoint, so
    a resumed run re-applies it without searching.

    Args:
        mode: ``"max_fit"`` or ``"throughput"``.
        init_batch_size: first batch size tried.
        max_batch_size: upper bound; ``None`` uses the training set size when it is known.
        max_trials: budget of trial steps (``throughput`` trials each run ``warmup_steps + measure_steps`` steps).
        tolerance: ``max_fit`` bisection stops when the bracket is within this fraction of the limit.
        safety_margin: fraction taken off the largest batch that fits (``max_fit``).
        throughput_tolerance: ``throughput`` picks the smallest batch within this fraction of the best samples/s.
        warmup_steps: untimed steps before timing (``throughput``).
        measure_steps: timed steps per candidate (``throughput``).
        max_memory_gb: memory budget per device in GiB; required to find a limit on CPU (which does not raise OOM
            until the machine swaps), optional on CUDA (stricter than the card).
        keep_global_batch: keep ``batch_size * accumulate_grad_batches * world_size`` constant by choosing a divisor
            of it and setting ``trainer.accumulate_grad_batches``; the optimisation is then unchanged (the default, so
            the callback is safe to leave on: a batch that does not fit becomes accumulated smaller batches). With
            ``False`` the found size is used as is and the global batch changes (see ``lr_scaling``).
        global_batch_size: the global batch to keep; ``None``: the one configured at fit start.
        lr_scaling: when the global batch changes, scale the learning rates by the ratio (``"linear"``), its square
            root (``"sqrt"``), or not (``"none"``).
        batch_arg_name: attribute holding the batch size, on the model, its ``hparams`` or the datamodule.
        cache_dir: folder (or ``.json`` file) of the result cache; ``None``: ``$MLCOST_CACHE_DIR`` or
            ``~/.cache/mlcost_pl``.
        use_cache: read and write the cache.
        max_search_share: ``throughput`` stops before a trial that would take the search past this share of the
            run's expected training time (predicted from the first measured speed and
            ``trainer.estimated_stepping_batches``); ``None``: no bound.

    Raises:
        ValueError: an argument out of range (named); at fit start, no attribute ``batch_arg_name`` or a global batch
            that is not a multiple of the world size.

    Logged metrics (through the trainer's loggers, once, at fit start):

    =========================================  ====================================================
    ``batch_size_search/batch_size``           per-device batch size chosen
    ``batch_size_search/accumulate_grad_batches``  gradient accumulation set (``keep_global_batch``)
    ``batch_size_search/largest_fit``          largest batch seen to fit (``max_fit``) or measured
    ``batch_size_search/trials``               trial steps run (0 on a cache hit)
    ``batch_size_search/search_s``             seconds spent searching
    ``batch_size_search/cache_hit``            1 when the result came from the cache
    ``batch_size_search/lr_scale``             factor applied to the learning rates
    ``batch_size_search/samples_per_s``        measured throughput of the pick (``throughput``)
    ``batch_size_search/expected_saving_s``    expected training seconds saved, search included (``throughput``)
    =========================================  ====================================================

    Example:
        >>> import lightning as L
        >>> from mlcost_pl.callbacks import BatchSizeSearch
        >>> cb = BatchSizeSearch(mode="max_fit", max_memory_gb=2.0, keep_global_batch=True)
        >>> trainer = L.Trainer(callbacks=[cb], max_epochs=1)  # doctest: +SKIP
        >>> trainer.fit(model, datamodule=dm)  # doctest: +SKIP
        >>> cb.result.batch_size  # doctest: +SKIP
    """

    def __init__(
        self,
        mode: str = "max_fit",
        init_batch_size: int = 32,
        max_batch_size: int | None = None,
        max_trials: int = 16,
        tolerance: float = 0.02,
        safety_margin: float = 0.02,
        throughput_tolerance: float = 0.05,
        warmup_steps: int = 1,
        measure_steps: int = 3,
        max_memory_gb: float | None = None,
        keep_global_batch: bool = True,
        global_batch_size: int | None = None,
        lr_scaling: str = "none",
        batch_arg_name: str = "batch_size",
        cache_dir: str | None = None,
        use_cache: bool = True,
        max_search_share: float | None = 0.05,
    ) -> None:
        if mode not in MODES:
            raise UserInputError(f"mode must be one of {MODES}, got {mode!r}")
        if lr_scaling not in LR_SCALINGS:
            raise UserInputError(f"lr_scaling must be one of {LR_SCALINGS}, got {lr_scaling!r}")
        if init_batch_size < 1:
            raise UserInputError(f"init_batch_size must be >= 1, got {init_batch_size}")
        if max_batch_size is not None and max_batch_size < 1:
            raise UserInputError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        if max_trials < 2:
            raise UserInputError(f"max_trials must be >= 2, got {max_trials}")
        for name, value in (("tolerance", tolerance), ("safety_margin", safety_margin), ("throughput_tolerance", throughput_tolerance)):
            if not 0 <= value < 1:
                raise UserInputError(f"{name} must be in [0, 1), got {value}")
        if warmup_steps < 0 or measure_steps < 1:
            raise UserInputError(f"warmup_steps must be >= 0 and measure_steps >= 1, got {warmup_steps} and {measure_steps}")
        if max_memory_gb is not None and not max_memory_gb > 0:
            raise UserInputError(f"max_memory_gb must be > 0 or None, got {max_memory_gb}")
        if global_batch_size is not None and global_batch_size < 1:
            raise UserInputError(f"global_batch_size must be >= 1 or None, got {global_batch_size}")
        if max_search_share is not None and not 0 < max_search_share <= 1:
            raise UserInputError(f"max_search_share must be in (0, 1] or None, got {max_search_share}")
        self.mode = mode
        self.init_batch_size = init_batch_size
        self.max_batch_size = max_batch_size
        self.max_trials = max_trials
        self.tolerance = tolerance
        self.safety_margin = safety_margin
        self.throughput_tolerance = throughput_tolerance
        self.warmup_steps = warmup_steps
        self.measure_steps = measure_steps
        self.max_memory_gb = max_memory_gb
        self.keep_global_batch = keep_global_batch
        self.global_batch_size = global_batch_size
        self.lr_scaling = lr_scaling
        self.batch_arg_name = batch_arg_name
        self.max_search_share = max_search_share
        self.cache = SearchCache(cache_dir) if use_cache else None
        self.result: SearchResult | None = None
        self.applied: dict[str, Any] = {}  # what was set: batch_size, accumulate_grad_batches (checkpointed)
        self.metrics: dict[str, float] = {}
        self._key = ""
        self._samples_per_rank: float | None = None  # samples each rank will train on (throughput budget)

    # ----------------------------------------------------------------------------------------------- Lightning hooks
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not lightning_hasattr(pl_module, self.batch_arg_name):
            raise UserInputError(
                f"batch_arg_name={self.batch_arg_name!r}: neither the model, its hparams nor the datamodule has it"
            )
        if self.applied.get("batch_size"):  # resumed from a checkpoint: re-apply, do not search again
            self._set_batch(trainer, pl_module, int(self.applied["batch_size"]), int(self.applied["accumulate_grad_batches"]))
            rank_zero_info(f"BatchSizeSearch: resumed with batch_size={self.applied['batch_size']} from the checkpoint")
            return
        original = int(lightning_getattr(pl_module, self.batch_arg_name))
        world = trainer.world_size
        accumulate = int(trainer.accumulate_grad_batches)
        global_batch = self.global_batch_size or original * accumulate * world

        start = time.perf_counter()
        self._samples_per_rank = _samples_per_rank(trainer, global_batch)
        result, cache_hit = self.search(trainer, pl_module)
        found = min_over_ranks(result.batch_size)  # a collective: every rank calls it, hit or miss
        if found < 1:
            raise RuntimeError("BatchSizeSearch: not even a batch of 1 fits (in memory or in max_memory_gb)")
        if self.cache is not None and trainer.is_global_zero and not cache_hit:
            self.cache.put(self._key, {"batch_size": found, "largest_fit": result.largest_fit, "mode": self.mode,
                                       "trials": result.num_trials, "samples_per_s": {str(k): v for k, v in result.samples_per_s.items()}})
        result.batch_size = found
        self.result = result

        if self.keep_global_batch:
            batch, accumulate = fit_global_batch(found, global_batch, world)
        else:
            batch = found
        scale = 1.0
        new_global = batch * accumulate * world
        if self.lr_scaling != "none" and new_global != global_batch:
            ratio = new_global / global_batch
            scale = ratio if self.lr_scaling == "linear" else math.sqrt(ratio)
            scale_learning_rates(trainer, scale)
        self._set_batch(trainer, pl_module, batch, accumulate)
        search_s = time.perf_counter() - start
        self.metrics = {
            "batch_size_search/batch_size": float(batch),
            "batch_size_search/accumulate_grad_batches": float(accumulate),
            "batch_size_search/largest_fit": float(result.largest_fit),
            "batch_size_search/trials": float(0 if cache_hit else result.num_trials),
            "batch_size_search/search_s": search_s,
            "batch_size_search/cache_hit": float(cache_hit),
            "batch_size_search/lr_scale": scale,
        }
        speeds = result.samples_per_s
        saving, baseline = None, None
        if speeds.get(batch):
            self.metrics["batch_size_search/samples_per_s"] = speeds[batch]
            baseline = original if original in speeds else min(speeds)
            if self._samples_per_rank is not None:
                saving = expected_saving(self._samples_per_rank, speeds[baseline], speeds[batch],
                                         0.0 if cache_hit else search_s)
                self.metrics["batch_size_search/expected_saving_s"] = saving["saving_s"]
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        line = explain_choice(self.mode, result, original, batch, accumulate, global_batch, world,
                              self.keep_global_batch, scale, saving, baseline)
        rank_zero_info(f"{line}; {'cache hit' if cache_hit else f'{result.num_trials} trials'} in {search_s:.2f}s")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"applied": dict(self.applied), "mode": self.mode}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        applied = state_dict.get("applied", {})
        if state_dict.get("mode", self.mode) == self.mode:
            self.applied = dict(applied)

    # ----------------------------------------------------------------------------------------------------- search
    def search(self, trainer: Trainer, pl_module: LightningModule) -> tuple[SearchResult, bool]:
        """Run this rank's search (or read the cache) and restore every piece of state; ``(result, cache_hit)``.

        Does not change the batch size; ``on_fit_start`` applies the result after the ranks agree.
        """
        rng = capture_rng_states()  # drawing the sample batch consumes RNG (shuffling): restore it too
        try:
            return self._search(trainer, pl_module)
        finally:
            restore_rng_states(rng)

    def _search(self, trainer: Trainer, pl_module: LightningModule) -> tuple[SearchResult, bool]:
        loader = trainer.fit_loop._data_source.dataloader()
        sample = trainer.strategy.batch_to_device(next(iter(loader)))
        cap = self.max_batch_size
        if cap is None:
            try:
                cap = len(loader.dataset)  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                cap = None
        device = trainer.strategy.root_device
        self._key = cache_key(
            model_signature(pl_module),
            device_name(device),
            apply_to_collection(sample, torch.Tensor, lambda t: tuple(t.shape[1:])),
            str(trainer.precision),
            mode=self.mode,
            optimizers=[type(o).__name__ for o in trainer.optimizers],
            max_memory_gb=self.max_memory_gb,
            init=self.init_batch_size,
            cap=cap,
            tolerance=(self.tolerance, self.safety_margin, self.throughput_tolerance),
        )
        if self.cache is not None:
            hit = self.cache.get(self._key)
            if hit and int(hit.get("batch_size", 0)) >= 1:
                speeds = {int(k): float(v) for k, v in (hit.get("samples_per_s") or {}).items()}
                return SearchResult(int(hit["batch_size"]), int(hit.get("largest_fit", hit["batch_size"])), [], speeds), True

        with probing(trainer, pl_module) as snapshot:
            probe = StepProbe(trainer, pl_module, sample, snapshot, max_memory_gb=self.max_memory_gb,
                              warmup_steps=self.warmup_steps, measure_steps=self.measure_steps)
            if self.mode == "max_fit":
                result = max_fit_search(
                    probe.fits, init=self.init_batch_size, max_batch_size=cap, tolerance=self.tolerance,
                    safety_margin=self.safety_margin, max_trials=self.max_trials,
                )
            else:
                result = throughput_search(
                    probe.samples_per_s, init=self.init_batch_size, max_batch_size=cap,
                    tolerance=self.throughput_tolerance, max_trials=self.max_trials, max_seconds=self._time_budget,
                )
        return result, False

    def _set_batch(self, trainer: Trainer, pl_module: LightningModule, batch: int, accumulate: int) -> None:
        lightning_setattr(pl_module, self.batch_arg_name, batch)
        trainer.accumulate_grad_batches = accumulate
        self.applied = {"batch_size": batch, "accumulate_grad_batches": accumulate}

    def _time_budget(self, speeds: dict[int, float]) -> float | None:
        """Seconds the throughput search may take: ``max_search_share`` of the training time the first speed predicts."""
        if self.max_search_share is None or self._samples_per_rank is None or not speeds:
            return None
        first = speeds[min(speeds)]
        return self.max_search_share * self._samples_per_rank / max(first, 1e-9)


def _samples_per_rank(trainer: Trainer, global_batch: int) -> float | None:
    """Samples each rank will train on in this fit, or None when the run has no known length."""
    try:
        steps = float(trainer.estimated_stepping_batches)
    except Exception:  # noqa: BLE001 - an unsized dataloader or an infinite run: no estimate
        return None
    if not math.isfinite(steps) or steps <= 0:
        return None
    return steps * global_batch / max(trainer.world_size, 1)
