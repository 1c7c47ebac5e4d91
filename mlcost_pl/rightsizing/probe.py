"""Trial steps behind :class:`mlcost_pl.callbacks.BatchSizeSearch`: run one real training step at a batch size, say
whether it fits or how fast it runs, and put every piece of state back bit-exactly.

A :class:`StepProbe` needs only what a Lightning ``Trainer`` exposes (``optimizers``, ``precision_plugin``,
``strategy.root_device``, ``lr_scheduler_configs``); it does not drive the Trainer's loops.
"""

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
from lightning_utilities.core.apply_func import apply_to_collection
from torch import nn

from mlcost_pl.rightsizing.memory import GIB, measure_step_memory
from mlcost_pl.utils.rng import capture_rng_states, restore_rng_states


def is_oom(err: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` and the out-of-memory ``RuntimeError``s Lightning recognises."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    if not isinstance(err, RuntimeError):
        return False
    from lightning.pytorch.utilities.memory import is_oom_error

    return bool(is_oom_error(err))


def device_name(device: torch.device) -> str:
    """A cache-key name for ``device``: the GPU model and its memory on CUDA, the device type otherwise."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda:{props.name}:{props.total_memory}"
    return str(device.type)


def tile(batch: Any, b: int) -> Any:
    """``batch`` with every batched tensor repeated along dim 0 to exactly ``b`` rows.

    Example:
        >>> tile(torch.arange(3), 7).tolist()
        [0, 1, 2, 0, 1, 2, 0]
    """

    def grow(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            return t
        reps = math.ceil(b / t.shape[0])
        return t.repeat(reps, *([1] * (t.dim() - 1)))[:b].contiguous()

    return apply_to_collection(batch, torch.Tensor, grow)


def training_loss(trainer: Any, module: nn.Module, batch: Any) -> torch.Tensor:
    """The loss ``module.training_step`` returns for ``batch``, under the trainer's precision.

    Raises:
        ValueError: ``training_step`` returned neither a tensor nor a dict with ``"loss"``.
    """
    with trainer.precision_plugin.train_step_context():
        out = module.training_step(batch, 0)
    loss = out["loss"] if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor):
        raise ValueError("BatchSizeSearch: training_step must return the loss (a tensor or a dict with 'loss')")
    return loss


def train_step(trainer: Any, module: nn.Module, batch: Any) -> None:
    """One forward, backward and optimizer step (or the module's own step under manual optimization)."""
    if not getattr(module, "automatic_optimization", True):
        with trainer.precision_plugin.train_step_context():
            module.training_step(batch, 0)
        return
    training_loss(trainer, module, batch).backward()
    for opt in trainer.optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


def free_device_memory(cuda: bool) -> None:
    """Return a probe's CUDA blocks so the next trial starts from the same allocator state."""
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()


def _to_cpu(obj: Any) -> Any:
    return apply_to_collection(obj, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters()
    yield from module.named_buffers()


def take_snapshot(module: nn.Module, trainer: Any) -> dict[str, Any]:
    """CPU copies of everything a probe changes (kept off the device so they do not skew the memory measured)."""
    return {
        "tensors": {n: t.detach().to("cpu", copy=True) for n, t in _named_tensors(module)},
        "grads": {n: (None if p.grad is None else p.grad.detach().to("cpu", copy=True)) for n, p in module.named_parameters()},
        "optimizers": [copy.deepcopy(_to_cpu(o.state_dict())) for o in trainer.optimizers],
        "modes": {name: m.training for name, m in module.named_modules()},
        "rng": capture_rng_states(),
    }


@torch.no_grad()
def restore_snapshot(module: nn.Module, trainer: Any, snap: dict[str, Any]) -> None:
    """Put back parameters, buffers, gradients, optimizer state, train/eval modes and RNG; reset torchmetrics."""
    for name, t in _named_tensors(module):
        t.copy_(snap["tensors"][name])
    for name, p in module.named_parameters():
        saved = snap["grads"][name]
        p.grad = None if saved is None else saved.to(p.device, copy=True)
    for opt, state in zip(trainer.optimizers, snap["optimizers"]):
        opt.load_state_dict(copy.deepcopy(state))  # load_state_dict may alias same-device tensors: keep ours intact
    modes = snap["modes"]
    for name, m in module.named_modules():
        m.training = modes.get(name, m.training)
    restore_rng_states(snap["rng"])
    try:
        from torchmetrics import Metric
    except ImportError:
        return
    for m in module.modules():
        if isinstance(m, Metric):
            m.reset()


@contextmanager
def probing(trainer: Any, module: nn.Module) -> Iterator[dict[str, Any]]:
    """Snapshot state, silence ``self.log`` and put the model in train mode; restore everything on exit."""
    snap = take_snapshot(module, trainer)
    noop: Callable[..., None] = lambda *args, **kwargs: None  # noqa: E731
    module.log, module.log_dict = noop, noop  # type: ignore[method-assign]
    module.train()
    try:
        yield snap
    finally:
        del module.log, module.log_dict
        restore_snapshot(module, trainer, snap)
        free_device_memory(trainer.strategy.root_device.type == "cuda")


class StepProbe:
    """Trial steps at a batch size on a batch tiled from ``sample``; state is restored after every trial.

    Use inside :func:`probing` (which snapshots the state each trial restores).

    Args:
        trainer: the Trainer (its optimizers, precision plugin and device).
        module: the LightningModule.
        sample: one real training batch, on the device.
        snapshot: what :func:`probing` yielded.
        max_memory_gb: per-device budget in GiB, or ``None`` (only a real OOM fails then).
        warmup_steps: untimed steps before timing.
        measure_steps: timed steps per batch size (their median is used).
    """

    def __init__(self, trainer: Any, module: nn.Module, sample: Any, snapshot: dict[str, Any],
                 max_memory_gb: float | None = None, warmup_steps: int = 1, measure_steps: int = 3) -> None:
        self.trainer, self.module, self.sample, self.snapshot = trainer, module, sample, snapshot
        self.max_memory_gb = max_memory_gb
        self.warmup_steps, self.measure_steps = warmup_steps, measure_steps
        self.device = trainer.strategy.root_device

    def fits(self, b: int) -> bool:
        """True when one training step at batch ``b`` runs without OOM and within ``max_memory_gb``."""
        return self._trial(b, self._fits, oom=False)

    def samples_per_s(self, b: int) -> float | None:
        """Measured samples/s at batch ``b`` (median of ``measure_steps``), or ``None`` when it does not fit."""
        if self.max_memory_gb is not None and not self.fits(b):
            return None
        return self._trial(b, self._speed, oom=None)

    def _trial(self, b: int, step: Callable[[Any, int], Any], oom: Any) -> Any:
        """``step(batch, b)`` on a batch of ``b``; ``oom`` when it runs out of memory; state restored after."""
        batch = tile(self.sample, b)
        try:
            return step(batch, b)
        except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError
            if is_oom(err):
                return oom
            raise
        finally:
            del batch
            restore_snapshot(self.module, self.trainer, self.snapshot)
            free_device_memory(self.device.type == "cuda")

    def _fits(self, batch: Any, b: int) -> bool:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        if self.max_memory_gb is not None and not cuda and getattr(self.module, "automatic_optimization", True):
            opts = self.trainer.optimizers
            mem = measure_step_memory(lambda: training_loss(self.trainer, self.module, batch), self.module,
                                      opts[0] if len(opts) == 1 else None)
            return mem.peak_bytes <= self.max_memory_gb * GIB
        train_step(self.trainer, self.module, batch)
        if cuda:
            torch.cuda.synchronize(self.device)
            if self.max_memory_gb is not None:
                return torch.cuda.max_memory_allocated(self.device) <= self.max_memory_gb * GIB
        return True

    def _speed(self, batch: Any, b: int) -> float:
        cuda = self.device.type == "cuda"
        for _ in range(self.warmup_steps):
            train_step(self.trainer, self.module, batch)
        times = []
        for _ in range(self.measure_steps):  # the median step time: robust to a step slowed by other jobs
            if cuda:
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            train_step(self.trainer, self.module, batch)
            if cuda:
                torch.cuda.synchronize(self.device)
            times.append(time.perf_counter() - start)
        return b / max(statistics.median(times), 1e-9)


def scale_learning_rates(trainer: Any, factor: float) -> None:
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
