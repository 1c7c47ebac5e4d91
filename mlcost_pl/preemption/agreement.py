"""Cross-rank agreement on local flags in ONE tiny all-reduce every ``every_n_steps`` optimizer steps.

The default callbacks need ranks to agree on decisions that depend on per-rank facts: a preemption notice (one rank
got the signal), a time-based save (each rank has its own clock), a budget stop (each rank has its own meter). A
broadcast after every batch is a host sync per step, which stalls a GPU pipeline. Instead, each callback registers a
*provider* (a function returning its local flag); at an agreement step the first callback to ask evaluates every
provider, the ranks all-reduce the flags once (sum > 0 means "some rank says yes"), and every callback reads its own
answer. Steps that are not agreement steps cost nothing. Decisions every rank can make alone (``global_step %
every_n_steps == 0``) need no agreement at all.

Pure logic: the reduce is injected, so this is tested without processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_EVERY_N_STEPS = 10
ReduceFn = Callable[[Sequence[float]], Sequence[float]]


class Agreement:
    """Local flags from several providers, agreed across ranks at most once per batch, every ``every_n_steps`` steps.

    Args:
        every_n_steps: agree when ``global_step % every_n_steps == 0`` (the smallest interval any user asked for).
        world_size: ranks; with one rank every step is an agreement step and nothing is reduced.

    Example:
        >>> a = Agreement(every_n_steps=2, world_size=2)
        >>> a.register("notice", lambda: True); a.register("budget", lambda: False)
        >>> sums = lambda flags: [2 * f for f in flags]  # what an all-reduce(sum) over 2 identical ranks returns
        >>> a.poll(batch=0, step=1, reduce=sums) is None   # not an agreement step: no reduce
        True
        >>> a.poll(batch=1, step=2, reduce=sums)
        {'budget': False, 'notice': True}
    """

    def __init__(self, every_n_steps: int = DEFAULT_EVERY_N_STEPS, world_size: int = 1) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.world_size = world_size
        self.reduces = 0
        self._providers: dict[str, Callable[[], bool]] = {}
        self._last: tuple[Any, dict[str, bool]] | None = None

    def register(self, name: str, provider: Callable[[], bool], every_n_steps: int | None = None) -> None:
        """Add (or replace) a provider; ``every_n_steps`` lowers the interval when smaller than the current one."""
        self._providers[name] = provider
        if every_n_steps is not None:
            self.every_n_steps = min(self.every_n_steps, every_n_steps)

    def is_agreement_step(self, step: int) -> bool:
        return self.world_size == 1 or step % self.every_n_steps == 0

    def poll(self, batch: Any, step: int, reduce: ReduceFn) -> dict[str, bool] | None:
        """The agreed flags at this batch (computed once per ``batch`` key), or ``None`` off agreement steps."""
        if not self.is_agreement_step(step):
            return None
        if self._last is not None and self._last[0] == batch:
            return self._last[1]
        names = sorted(self._providers)
        local = [1.0 if self._providers[n]() else 0.0 for n in names]
        if self.world_size > 1:
            local = list(reduce(local))
            self.reduces += 1
        agreed = {n: v > 0 for n, v in zip(names, local)}
        self._last = (batch, agreed)
        return agreed


_ATTR = "_mlcost_agreement"


def agreement_for(trainer: Any) -> Agreement:
    """The trainer's shared :class:`Agreement` (created on first use, rebuilt when the world size changes)."""
    found = getattr(trainer, _ATTR, None)
    if found is None or found.world_size != trainer.world_size:
        found = Agreement(DEFAULT_EVERY_N_STEPS, trainer.world_size)
        setattr(trainer, _ATTR, found)
    return found


def at_optimizer_boundary(trainer: Any) -> bool:
    """Whether the batch that just ended closed an accumulation window (its optimizer step ran).

    Saving anywhere else would lose the partial gradients of the window while the resumed sampler skips its batches.
    """
    return not trainer.fit_loop.epoch_loop._should_accumulate()


def poll(trainer: Any) -> dict[str, bool] | None:
    """Agree on the registered flags at this batch end, if it is an agreement step at an optimizer boundary."""
    if not at_optimizer_boundary(trainer):
        return None
    agreement = agreement_for(trainer)

    def reduce(flags: Sequence[float]) -> list[float]:
        import torch

        tensor = torch.tensor(list(flags), dtype=torch.float32, device=trainer.strategy.root_device)
        return trainer.strategy.reduce(tensor, reduce_op="sum").tolist()

    batch = trainer.fit_loop.epoch_loop.batch_progress.total.ready
    return agreement.poll(batch, trainer.global_step, reduce)
