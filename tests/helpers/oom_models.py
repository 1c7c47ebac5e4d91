"""Tiny LightningModules for right-sizing tests: one runs "out of memory" above a hidden batch size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override


class HiddenLimitModel(LightningModule):
    """A small MLP whose ``training_step`` raises ``torch.OutOfMemoryError`` when the batch exceeds ``limit``.

    The message is the one CUDA's allocator uses, so Lightning's ``BatchSizeFinder`` recognises it too. ``seen``
    records every batch size the step was called with (the number of trials a search spent).

    Args:
        limit: the hidden largest batch that "fits".
        batch_size: the training DataLoader's batch size (what a search changes).
        n_samples: training set size (the default upper bound of a search).
        in_features: input width; inputs are ``(B, in_features)`` floats, 4 classes.
        dropout: dropout probability (exercises RNG restore).
    """

    def __init__(self, limit: int = 300, batch_size: int = 16, n_samples: int = 4096, in_features: int = 16, dropout: float = 0.1, lr: float = 1e-2) -> None:
        super().__init__()
        self.limit = limit
        self.batch_size = batch_size
        self.n_samples = n_samples
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(in_features, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 4))
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.randn(n_samples, in_features, generator=g), torch.randint(0, 4, (n_samples,), generator=g))
        self.seen: list[int] = []

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @override
    def training_step(self, batch, batch_idx):
        x, y = batch
        self.seen.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {len(x) * 4} bytes (simulated: batch {len(x)} > hidden limit)"
            )
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss)
        return loss

    @override
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)

    @override
    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)
