"""When to unfreeze which group: by epoch or by optimizer step, all at once or gradually from the head down."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mlcost_pl.errors import UserInputError


@dataclass(frozen=True)
class UnfreezeSchedule:
    """Unfreeze group ``i`` (0 = nearest the head) once ``epoch`` (or step) reaches ``at + i * every``.

    Args:
        at: epoch or global step at which group 0 is unfrozen; ``None`` keeps everything frozen for the whole run.
        interval: ``"epoch"`` (checked at the start of each training epoch) or ``"step"`` (checked before each
            training batch, against the number of optimizer steps taken).
        every: epochs or steps between two groups when unfreezing gradually.
        groups: number of groups.
        lr_multipliers: learning rate of each group relative to the optimizer's first param group: one float for
            all groups, or one per group (group 0 first).

    Raises:
        ValueError: a negative ``at``, ``every`` < 1, ``groups`` < 1, an unknown ``interval``, or
            ``lr_multipliers`` of the wrong length or not > 0.

    Example:
        >>> s = UnfreezeSchedule(at=2, groups=3, every=1, lr_multipliers=[0.1, 0.05, 0.01])
        >>> s.due(epoch=3, step=0, done=[0])
        [1]
        >>> s.multiplier(2)
        0.01
    """

    at: int | None = None
    interval: str = "epoch"
    every: int = 1
    groups: int = 1
    lr_multipliers: float | Sequence[float] = 0.1
    _mults: tuple[float, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.interval not in ("epoch", "step"):
            raise UserInputError(f"unfreeze_interval must be 'epoch' or 'step', got {self.interval!r}")
        if self.at is not None and (not isinstance(self.at, int) or self.at < 0):
            raise UserInputError(f"unfreeze_at must be None or an int >= 0, got {self.at!r}")
        if not isinstance(self.every, int) or self.every < 1:
            raise UserInputError(f"unfreeze_every must be an int >= 1, got {self.every!r}")
        if not isinstance(self.groups, int) or self.groups < 1:
            raise UserInputError(f"groups must be an int >= 1, got {self.groups!r}")
        if isinstance(self.lr_multipliers, (int, float)):
            mults = (float(self.lr_multipliers),) * self.groups
        else:
            mults = tuple(float(m) for m in self.lr_multipliers)
            if len(mults) != self.groups:
                raise UserInputError(f"lr_multipliers has {len(mults)} entries but groups={self.groups}; give one per group or a single float")
        if any(not m > 0 for m in mults):
            raise UserInputError(f"lr_multipliers must all be > 0, got {list(mults)}")
        object.__setattr__(self, "_mults", mults)

    def threshold(self, group: int) -> int | None:
        """The epoch or step at which ``group`` is unfrozen (``None``: never)."""
        return None if self.at is None else self.at + group * self.every

    def due(self, epoch: int, step: int, done: Sequence[int]) -> list[int]:
        """Groups that should be unfrozen now and are not in ``done``, in unfreezing order (head first)."""
        if self.at is None:
            return []
        now = epoch if self.interval == "epoch" else step
        return [g for g in range(self.groups) if g not in done and now >= self.threshold(g)]

    def multiplier(self, group: int) -> float:
        """Learning-rate multiplier of ``group`` relative to the optimizer's first param group."""
        return self._mults[group]
