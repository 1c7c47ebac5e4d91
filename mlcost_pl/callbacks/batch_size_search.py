"""BatchSizeSearch: find the batch size at fit start (largest that fits, or the fastest), DDP-safe and cached."""

from __future__ import annotations

import copy
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.memory import is_oom_error
from lightning.pytorch.utilities.parsing import lightning_getattr, lightning_hasattr, lightning_setattr
from lightning_utilities.core.apply_func import apply_to_collection
from typing_extensions import override

from mlcost_pl.rightsizing.cache import SearchCache, cache_key, model_signature
from mlcost_pl.rightsizing.memory import GIB, measure_step_memory
from mlcost_pl.rightsizing.search import (
    SearchResult,
    fit_global_batch,
    max_fit_search,
    min_over_ranks,
    throughput_search,
)
from mlcost_pl.utils.rng import capture_rng_states, restore_rng_states

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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if lr_scaling not in LR_SCALINGS:
            raise ValueError(f"lr_scaling must be one of {LR_SCALINGS}, got {lr_scaling!r}")
        if init_batch_size < 1:
            raise ValueError(f"init_batch_size must be >= 1, got {init_batch_size}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        if max_trials < 2:
            raise ValueError(f"max_trials must be >= 2, got {max_trials}")
        for name, value in (("tolerance", tolerance), ("safety_margin", safety_margin), ("throughput_tolerance", throughput_tolerance)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if warmup_steps < 0 or measure_steps < 1:
            raise ValueError(f"warmup_steps must be >= 0 and measure_steps >= 1, got {warmup_steps} and {measure_steps}")
        if max_memory_gb is not None and not max_memory_gb > 0:
            raise ValueError(f"max_memory_gb must be > 0 or None, got {max_memory_gb}")
        if global_batch_size is not None and global_batch_size < 1:
            raise ValueError(f"global_batch_size must be >= 1 or None, got {global_batch_size}")
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
        self.cache = SearchCache(cache_dir) if use_cache else None
        self.result: SearchResult | None = None
        self.applied: dict[str, Any] = {}  # what was set: batch_size, accumulate_grad_batches (checkpointed)
        self.metrics: dict[str, float] = {}
        self._snapshot: dict[str, Any] = {}
        self._key = ""

    # ----------------------------------------------------------------------------------------------- Lightning hooks
    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not lightning_hasattr(pl_module, self.batch_arg_name):
            raise ValueError(
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
            _scale_learning_rates(trainer, scale)
        self._set_batch(trainer, pl_module, batch, accumulate)
        self.metrics = {
            "batch_size_search/batch_size": float(batch),
            "batch_size_search/accumulate_grad_batches": float(accumulate),
            "batch_size_search/largest_fit": float(result.largest_fit),
            "batch_size_search/trials": float(0 if cache_hit else result.num_trials),
            "batch_size_search/search_s": time.perf_counter() - start,
            "batch_size_search/cache_hit": float(cache_hit),
            "batch_size_search/lr_scale": scale,
        }
        if result.samples_per_s.get(found):
            self.metrics["batch_size_search/samples_per_s"] = result.samples_per_s[found]
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        rank_zero_info(
            f"BatchSizeSearch({self.mode}): batch_size {original} -> {batch}, accumulate_grad_batches={accumulate}, "
            f"global batch {global_batch} -> {new_global}, "
            f"lr x{scale:.3g}, {'cache hit' if cache_hit else f'{result.num_trials} trials'} "
            f"in {self.metrics['batch_size_search/search_s']:.2f}s"
        )

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
            _device_name(device),
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

        with _probing(trainer, pl_module) as self._snapshot:
            if self.mode == "max_fit":
                result = max_fit_search(
                    lambda b: self._fits(trainer, pl_module, sample, b, device),
                    init=self.init_batch_size, max_batch_size=cap, tolerance=self.tolerance,
                    safety_margin=self.safety_margin, max_trials=self.max_trials,
                )
            else:
                result = throughput_search(
                    lambda b: self._samples_per_s(trainer, pl_module, sample, b, device),
                    init=self.init_batch_size, max_batch_size=cap, tolerance=self.throughput_tolerance,
                    max_trials=self.max_trials,
                )
        return result, False

    def _fits(self, trainer: Trainer, pl_module: LightningModule, sample: Any, b: int, device: torch.device) -> bool:
        batch = _tile(sample, b)
        cuda = device.type == "cuda"
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            if self.max_memory_gb is not None and not cuda and pl_module.automatic_optimization:
                opts = trainer.optimizers
                mem = measure_step_memory(lambda: _loss(trainer, pl_module, batch), pl_module, opts[0] if len(opts) == 1 else None)
                return mem.peak_bytes <= self.max_memory_gb * GIB
            _train_step(trainer, pl_module, batch)
            if cuda:
                torch.cuda.synchronize(device)
                if self.max_memory_gb is not None:
                    return torch.cuda.max_memory_allocated(device) <= self.max_memory_gb * GIB
            return True
        except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
            if isinstance(err, torch.OutOfMemoryError) or is_oom_error(err):
                return False
            raise
        finally:
            del batch
            _restore_snapshot(pl_module, trainer, self._snapshot)
            _free(cuda)

    def _samples_per_s(self, trainer: Trainer, pl_module: LightningModule, sample: Any, b: int, device: torch.device) -> float | None:
        if self.max_memory_gb is not None and not self._fits(trainer, pl_module, sample, b, device):
            return None
        batch = _tile(sample, b)
        cuda = device.type == "cuda"
        try:
            for _ in range(self.warmup_steps):
                _train_step(trainer, pl_module, batch)
            times = []
            for _ in range(self.measure_steps):  # the median step time: robust to a step slowed by other jobs
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                _train_step(trainer, pl_module, batch)
                if cuda:
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            return b / max(statistics.median(times), 1e-9)
        except RuntimeError as err:
            if isinstance(err, torch.OutOfMemoryError) or is_oom_error(err):
                return None
            raise
        finally:
            del batch
            _restore_snapshot(pl_module, trainer, self._snapshot)
            _free(cuda)

    def _set_batch(self, trainer: Trainer, pl_module: LightningModule, batch: int, accumulate: int) -> None:
        lightning_setattr(pl_module, self.batch_arg_name, batch)
        trainer.accumulate_grad_batches = accumulate
        self.applied = {"batch_size": batch, "accumulate_grad_batches": accumulate}


# --------------------------------------------------------------------------------------------------------- helpers
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda:{props.name}:{props.total_memory}"
    return str(device.type)


def _tile(batch: Any, b: int) -> Any:
    """``batch`` with every batched tensor repeated along dim 0 to exactly ``b`` rows."""

    def grow(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            return t
        reps = math.ceil(b / t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:b].contiguous()

    return apply_to_collection(batch, torch.Tensor, grow)


def _loss(trainer: Trainer, pl_module: LightningModule, batch: Any) -> torch.Tensor:
    with trainer.precision_plugin.train_step_context():
        out = pl_module.training_step(batch, 0)
    loss = out["loss"] if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor):
        raise ValueError("BatchSizeSearch: training_step must return the loss (a tensor or a dict with 'loss')")
    return loss


def _train_step(trainer: Trainer, pl_module: LightningModule, batch: Any) -> None:
    if not pl_module.automatic_optimization:  # the step does its own backward and optimizer step
        with trainer.precision_plugin.train_step_context():
            pl_module.training_step(batch, 0)
        return
    _loss(trainer, pl_module, batch).backward()
    for opt in trainer.optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


def _free(cuda: bool) -> None:
    if cuda:  # return the probe's blocks so the next trial starts from the same allocator state
        gc.collect()
        torch.cuda.empty_cache()


def _to_cpu(obj: Any) -> Any:
    return apply_to_collection(obj, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))


def _take_snapshot(pl_module: LightningModule, trainer: Trainer) -> dict[str, Any]:
    """CPU copies of everything a probe changes (kept off the device so they do not skew the memory measured)."""
    snap: dict[str, Any] = {
        "tensors": {n: t.detach().to("cpu", copy=True) for n, t in _named_tensors(pl_module)},
        "grads": {n: (None if p.grad is None else p.grad.detach().to("cpu", copy=True)) for n, p in pl_module.named_parameters()},
        "optimizers": [copy.deepcopy(_to_cpu(o.state_dict())) for o in trainer.optimizers],
        "modes": {name: m.training for name, m in pl_module.named_modules()},
        "rng": capture_rng_states(),
    }
    return snap


def _named_tensors(pl_module: LightningModule) -> Iterator[tuple[str, torch.Tensor]]:
    yield from pl_module.named_parameters()
    yield from pl_module.named_buffers()


@torch.no_grad()
def _restore_snapshot(pl_module: LightningModule, trainer: Trainer, snap: dict[str, Any]) -> None:
    for name, t in _named_tensors(pl_module):
        t.copy_(snap["tensors"][name])
    for name, p in pl_module.named_parameters():
        saved = snap["grads"][name]
        p.grad = None if saved is None else saved.to(p.device, copy=True)
    for opt, state in zip(trainer.optimizers, snap["optimizers"]):
        opt.load_state_dict(copy.deepcopy(state))  # load_state_dict may alias same-device tensors: keep ours intact
    modes = snap["modes"]
    for name, m in pl_module.named_modules():
        m.training = modes.get(name, m.training)
    restore_rng_states(snap["rng"])
    _reset_metrics(pl_module)


def _reset_metrics(pl_module: LightningModule) -> None:
    try:
        from torchmetrics import Metric
    except ImportError:
        return
    for m in pl_module.modules():
        if isinstance(m, Metric):
            m.reset()


@contextmanager
def _probing(trainer: Trainer, pl_module: LightningModule) -> Iterator[dict[str, Any]]:
    """Snapshot state, silence ``self.log`` and put the model in train mode; restore everything on exit."""
    snap = _take_snapshot(pl_module, trainer)
    noop: Callable[..., None] = lambda *args, **kwargs: None  # noqa: E731
    pl_module.log, pl_module.log_dict = noop, noop  # type: ignore[method-assign]
    pl_module.train()
    try:
        yield snap
    finally:
        del pl_module.log, pl_module.log_dict
        _restore_snapshot(pl_module, trainer, snap)
        _free(trainer.strategy.root_device.type == "cuda")


def _scale_learning_rates(trainer: Trainer, factor: float) -> None:
    """Multiply every learning rate by ``factor``, in the optimizers and in the schedulers' base rates."""
    for opt in trainer.optimizers:
        for group in opt.param_groups:
            group["lr"] = group["lr"] * factor
            if "initial_lr" in group:
                group["initial_lr"] = group["initial_lr"] * factor
    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        if hasattr(sched, "base_lrs"):
            sched.base_lrs = [lr * factor for lr in sched.base_lrs]
        if hasattr(sched, "_last_lr"):
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
