"""CIFAR10DataModule: torchvision's CIFAR-10, downloaded on first use (needs network; never run in tests)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Subset
from typing_extensions import override

from mlcost_pl.data.digits import check_num_classes
from mlcost_pl.errors import UserInputError


class CIFAR10DataModule(LightningDataModule):
    """CIFAR-10 (50k train / 10k test, 32x32 RGB, 10 classes) with a seeded train/val split.

    Args:
        data_dir: where torchvision downloads and caches the archive.
        batch_size: per-device batch size.
        val_size: images of the training set held out for validation.
        num_workers: DataLoader workers.
        augment: random crop + flip on the training split.
        split_seed: seed of the train/val split.
        channels: must be 3 (kept so configs can interpolate ``data.channels``).
        num_classes: optional check: must be 10.

    Example:
        >>> dm = CIFAR10DataModule("data/cifar10")  # doctest: +SKIP
    """

    num_classes = 10

    def __init__(
        self,
        data_dir: str = "data/cifar10",
        batch_size: int = 128,
        val_size: int = 5000,
        num_workers: int = 2,
        augment: bool = True,
        split_seed: int = 0,
        channels: int = 3,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if channels != 3:
            raise UserInputError(f"channels must be 3 for CIFAR-10, got {channels}")
        check_num_classes(num_classes, 10)
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 < val_size < 50000:
            raise UserInputError(f"val_size must be in (0, 50000), got {val_size}")
        self.save_hyperparameters(ignore=["num_classes"])
        self.batch_size = batch_size
        self.datasets: dict[str, Any] = {}

    @override
    def prepare_data(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(self.hparams.data_dir, train=True, download=True)
        CIFAR10(self.hparams.data_dir, train=False, download=True)

    def _transform(self, train: bool) -> Any:
        from torchvision import transforms as T

        ops: list[Any] = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if train and self.hparams.augment else []
        return T.Compose([*ops, T.ToTensor(), T.Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))])

    @override
    def setup(self, stage: str | None = None) -> None:
        from torchvision.datasets import CIFAR10

        if self.datasets:
            return
        full_train = CIFAR10(self.hparams.data_dir, train=True, transform=self._transform(True))
        full_val = CIFAR10(self.hparams.data_dir, train=True, transform=self._transform(False))
        perm = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.hparams.split_seed)).tolist()
        n_val = self.hparams.val_size
        self.datasets = {
            "train": Subset(full_train, perm[n_val:]),
            "val": Subset(full_val, perm[:n_val]),
            "test": CIFAR10(self.hparams.data_dir, train=False, transform=self._transform(False)),
        }

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=split == "train",
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
