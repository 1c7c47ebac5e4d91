"""Exact mid-epoch resume: a sampler that reproduces an epoch's order and skips the indices already consumed.

Lightning restores its loop counters mid-epoch but, for a plain ``DataLoader``, starts a fresh iterator: the model
then sees the first batches of a new permutation again. ``ResumableSampler`` replaces the ``sampler`` inside a
DataLoader's ``BatchSampler`` so that the epoch's order is a pure function of ``(seed, epoch)`` and, after a resume,
the first ``skip`` indices are dropped before any sample is loaded (only indices are generated).

Supported: ``RandomSampler`` (any ``replacement``/``num_samples``), ``SequentialSampler``, ``DistributedSampler``
(per rank: its order is already ``(seed, epoch)``-based). Stateful loaders (``restores_itself``: litdata's
``StreamingDataLoader``) restore their own position from the checkpoint. Anything else (a custom sampler or batch sampler, an
``IterableDataset``, ``batch_size=None``) is reported by ``unsupported_reason``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler, SequentialSampler

SUPPORTED = (RandomSampler, SequentialSampler, DistributedSampler)


class ResumableSampler(Sampler[int]):
    """Wraps a supported sampler; its epoch order depends only on ``(seed, epoch)``; ``skip_next`` drops a prefix.

    Args:
        sampler: a ``RandomSampler``, ``SequentialSampler`` or ``DistributedSampler``.
        seed: base seed of ``RandomSampler`` orders (epoch ``e`` uses ``seed + e``, as ``DistributedSampler`` does).

    Raises:
        ValueError: an unsupported ``sampler``.

    Example:
        >>> s = ResumableSampler(RandomSampler(range(6)), seed=3)
        >>> full = list(s)
        >>> s.skip_next(epoch=0, num_indices=4)
        >>> list(s) == full[4:]
        True
    """

    def __init__(self, sampler: Sampler, seed: int = 0) -> None:
        if type(sampler) not in SUPPORTED:
            raise ValueError(f"sampler must be one of {[c.__name__ for c in SUPPORTED]}, got {type(sampler).__name__}")
        self.inner = sampler
        self.seed = int(seed)
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, number of indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if isinstance(self.inner, DistributedSampler):
            self.inner.set_epoch(epoch)

    def skip_next(self, epoch: int, num_indices: int) -> None:
        """On the next iteration of ``epoch`` (and only then), drop its first ``num_indices`` indices."""
        if num_indices < 0:
            raise ValueError(f"num_indices must be >= 0, got {num_indices}")
        self._skip = (int(epoch), int(num_indices))

    def epoch_order(self) -> Iterator[int]:
        """The full index order of the current epoch."""
        inner = self.inner
        if isinstance(inner, RandomSampler):
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            return iter(RandomSampler(inner.data_source, replacement=inner.replacement, num_samples=inner._num_samples, generator=g))
        return iter(inner)

    def __iter__(self) -> Iterator[int]:
        skip = 0
        if self._skip is not None and self._skip[0] == self.epoch:
            skip = self._skip[1]
            self._skip = None
        return itertools.islice(self.epoch_order(), skip, None)

    def __len__(self) -> int:
        return len(self.inner)  # the full epoch: Lightning counts the skipped batches as already done


def restores_itself(dataloader: object) -> bool:
    """Whether ``dataloader`` is stateful (``state_dict``/``load_state_dict``, e.g. litdata's StreamingDataLoader).

    Lightning stores such a loader's state in every checkpoint and restores it on resume, so it resumes mid-epoch at
    the exact sample by itself: nothing to wrap, nothing to skip.

    Example:
        >>> restores_itself(DataLoader(range(4))), restores_itself(type("L", (), {"state_dict": dict, "load_state_dict": print})())
        (False, True)
    """
    return callable(getattr(dataloader, "state_dict", None)) and callable(getattr(dataloader, "load_state_dict", None))


def unsupported_reason(dataloader: object) -> str | None:
    """Why ``dataloader`` cannot resume mid-epoch exactly, or None when it can.

    Example:
        >>> unsupported_reason(DataLoader(range(4), batch_size=2, shuffle=True)) is None
        True
    """
    if not isinstance(dataloader, DataLoader):
        return f"it is a {type(dataloader).__name__}, not a torch DataLoader"
    if isinstance(dataloader.dataset, IterableDataset):
        return "its dataset is an IterableDataset (no indices to skip)"
    bs = dataloader.batch_sampler
    if bs is None:
        return "it has batch_size=None (no BatchSampler)"
    if type(bs) is not BatchSampler:
        return f"it uses a custom batch_sampler {type(bs).__name__}"
    if isinstance(bs.sampler, ResumableSampler):
        return None
    if type(bs.sampler) not in SUPPORTED:
        return f"its sampler {type(bs.sampler).__name__} is not one of RandomSampler, SequentialSampler, DistributedSampler"
    return None


def wrap_dataloader(dataloader: DataLoader, seed: int) -> ResumableSampler:
    """Install (once) a ``ResumableSampler`` inside ``dataloader.batch_sampler``, in place; return it.

    A user ``RandomSampler`` generator's initial seed is kept as the base seed, so explicitly seeded loaders keep
    their seed.

    Raises:
        ValueError: ``dataloader`` is not supported (the message says why).
    """
    reason = unsupported_reason(dataloader)
    if reason is not None:
        raise ValueError(f"dataloader cannot resume mid-epoch: {reason}")
    bs = dataloader.batch_sampler
    if isinstance(bs.sampler, ResumableSampler):
        return bs.sampler
    inner = bs.sampler
    if isinstance(inner, RandomSampler) and inner.generator is not None:
        seed = inner.generator.initial_seed()
    bs.sampler = ResumableSampler(inner, seed=seed)
    return bs.sampler
