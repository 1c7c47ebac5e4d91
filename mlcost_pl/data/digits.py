"""DigitsDataModule: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes). No network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from mlcost_pl.errors import UserInputError


def check_num_classes(given: int | None, found: int) -> None:
    """Raise if a configured ``data.num_classes`` disagrees with what the data holds."""
    if given is not None and int(given) != found:
        raise UserInputError(f"data.num_classes={given} but the data has {found} classes")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list[int], list[int], list[int]]:
    """A fixed, seeded train/val/test split of ``range(n)``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


class DigitsDataModule(LightningDataModule):
    """Handwritten digits from ``sklearn.datasets.load_digits``, resized and normalized, held in memory.

    The split is fixed by ``split_seed`` and does not depend on the training seed, so runs are comparable.

    Args:
        image_size: side of the square images fed to the model (bilinear resize of the 8x8 originals).
        channels: 1 (grayscale) or 3 (repeated, for ImageNet-pretrained backbones).
        batch_size: per-device batch size.
        val_fraction: share of the 1,797 images held out for validation.
        test_fraction: share held out for test.
        classes: keep only these digits (labels remapped to ``0..len(classes)-1``); ``None`` keeps all ten.
        split_seed: seed of the train/val/test split.
        num_workers: DataLoader workers.
        drop_last: drop the last incomplete training batch.
        num_classes: optional check: must equal the number of classes kept.

    Raises:
        ValueError: a bad size, channel count, fraction or class list.

    Example:
        >>> dm = DigitsDataModule(image_size=16, batch_size=32)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape)
        (32, 1, 16, 16)
    """

    mean, std = 0.3, 0.38  # of load_digits() / 16 over the whole set

    def __init__(
        self,
        image_size: int = 32,
        channels: int = 1,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        classes: Sequence[int] | None = None,
        split_seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise UserInputError(f"image_size must be >= 8, got {image_size}")
        if channels not in (1, 3):
            raise UserInputError(f"channels must be 1 or 3, got {channels}")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise UserInputError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1) with sum < 1")
        if classes is not None:
            classes = [int(c) for c in classes]
            if len(set(classes)) < 2 or any(c not in range(10) for c in classes):
                raise UserInputError(f"classes must be at least two distinct digits in 0..9, got {classes}")
        self.save_hyperparameters(ignore=["num_classes"])
        self.batch_size = batch_size
        self.classes = classes
        self.num_classes = len(classes) if classes is not None else 10
        check_num_classes(num_classes, self.num_classes)
        self.data_train: TensorDataset | None = None
        self.data_val: TensorDataset | None = None
        self.data_test: TensorDataset | None = None

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        if self.classes is not None:
            keep = torch.isin(y, torch.tensor(self.classes))
            x, y = x[keep], y[keep]
            remap = torch.full((10,), -1, dtype=torch.long)
            remap[torch.tensor(self.classes)] = torch.arange(len(self.classes))
            y = remap[y]
        size = self.hparams.image_size
        if size != 8:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if self.hparams.channels == 3:
            x = x.repeat(1, 3, 1, 1)
        return x.contiguous(), y

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.data_train is not None:
            return
        x, y = self._load()
        train, val, test = split_indices(len(y), self.hparams.val_fraction, self.hparams.test_fraction, self.hparams.split_seed)
        self.data_train = TensorDataset(x[train], y[train])
        self.data_val = TensorDataset(x[val], y[val])
        self.data_test = TensorDataset(x[test], y[test])

    def _loader(self, ds: TensorDataset | None, train: bool) -> DataLoader:
        assert ds is not None, "call setup() first"
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and self.hparams.drop_last,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, train=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, train=False)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, train=False)

    @override
    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, train=False)
