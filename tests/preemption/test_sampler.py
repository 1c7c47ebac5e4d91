"""ResumableSampler: the resumed epoch yields exactly the remaining batches, without loading the skipped samples."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, TensorDataset

from mlcost_pl.preemption.sampler import ResumableSampler, unsupported_reason, wrap_dataloader


class CountingDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.n, self.loaded = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.loaded.append(i)
        return i


def _batches(loader):
    return [b.tolist() for b in loader]


@pytest.mark.parametrize("kind", ["random", "sequential", "random_replacement"])
def test_resume_yields_the_remaining_batches_without_loading_skipped(kind):
    def make(ds):
        if kind == "random_replacement":
            return DataLoader(ds, batch_size=3, sampler=RandomSampler(ds, replacement=True, num_samples=14))
        return DataLoader(ds, batch_size=3, shuffle=kind == "random")

    ds = CountingDataset(14)
    loader = make(ds)
    sampler = wrap_dataloader(loader, seed=7)
    sampler.set_epoch(2)
    full = _batches(loader)
    assert len(full) == len(loader) == 5

    ds2 = CountingDataset(14)
    resumed = make(ds2)
    s2 = wrap_dataloader(resumed, seed=7)
    s2.set_epoch(2)
    s2.skip_next(epoch=2, num_indices=2 * 3)  # two batches were consumed before the preemption
    assert _batches(resumed) == full[2:]
    assert sorted(ds2.loaded) == sorted(i for b in full[2:] for i in b)  # skipped samples never loaded
    assert _batches(resumed) == full  # the skip applies once; the next pass of the same epoch is whole


def test_order_depends_on_seed_and_epoch_only():
    ds = TensorDataset(torch.arange(20))
    a, b = DataLoader(ds, batch_size=4, shuffle=True), DataLoader(ds, batch_size=4, shuffle=True)
    sa, sb = wrap_dataloader(a, seed=1), wrap_dataloader(b, seed=1)
    torch.manual_seed(123)  # global RNG state does not matter
    first = [x[0].tolist() for x in a]
    assert first == [x[0].tolist() for x in b]
    sa.set_epoch(1)
    assert [x[0].tolist() for x in a] != first
    assert wrap_dataloader(a, seed=99) is sa  # wrapping twice is a no-op


def test_distributed_sampler_skips_per_rank():
    ds = CountingDataset(22)
    orders = []
    for rank in (0, 1):
        dist = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=5)
        loader = DataLoader(ds, batch_size=2, sampler=dist)
        s = wrap_dataloader(loader, seed=0)
        s.set_epoch(3)
        full = _batches(loader)
        s.skip_next(epoch=3, num_indices=4)
        assert _batches(loader) == full[2:]
        orders.append(full)
    assert orders[0] != orders[1]


def test_unsupported_loaders_are_explained():
    class Custom(Sampler):
        def __iter__(self):
            return iter(range(4))

        def __len__(self):
            return 4

    assert "Custom is not one of" in unsupported_reason(DataLoader(range(4), sampler=Custom(), batch_size=2))
    assert "batch_size=None" in unsupported_reason(DataLoader(range(4), batch_size=None))
    assert "not a torch DataLoader" in unsupported_reason([1, 2])
    with pytest.raises(ValueError, match="cannot resume mid-epoch: it uses a custom batch_sampler"):
        wrap_dataloader(DataLoader(range(4), batch_sampler=[[0, 1], [2, 3]]), seed=0)
    with pytest.raises(ValueError, match="sampler must be one of"):
        ResumableSampler(Custom())
