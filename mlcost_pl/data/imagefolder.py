"""ImageFolderDataModule: ``root/<class>/<image>`` from a local path or any fsspec URL."""

from __future__ import annotations

import io
import logging
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from typing_extensions import override

from mlcost_pl.data.digits import check_num_classes, split_indices
from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.utils.fs import get_fs

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def scan_image_folder(root: str) -> tuple[list[str], list[tuple[str, int]], Any]:
    """List classes (sorted sub-folder names) and ``(path, label)`` samples under ``root``.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no class folders with images.
    """
    fs, base = get_fs(root)
    if not fs.isdir(base):
        raise MissingInputError(f"data.root: no such directory: {root}")
    classes = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False) if fs.isdir(p))
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        files = sorted(fs.find(f"{base.rstrip('/')}/{name}"))
        samples += [(f, label) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise MissingInputError(f"data.root: no images in class sub-folders of {root} (expected root/<class>/<image>)")
    return classes, samples, fs


def _to_rgb(im: Any) -> Any:
    return im.convert("RGB")


def image_transform(image_size: int, channels: int, augment: bool = False, train: bool = False) -> Any:
    """The torchvision transform of ImageFolderDataModule (also applied to images streamed in their encoded form)."""
    from torchvision import transforms as T

    ops: list[Any] = [T.Grayscale(1) if channels == 1 else T.Lambda(_to_rgb)]
    ops.append(T.Resize((image_size, image_size)))
    if train and augment:
        ops += [T.RandomHorizontalFlip(), T.RandomResizedCrop(image_size, scale=(0.8, 1.0))]
    mean, std = ([0.5], [0.25]) if channels == 1 else ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


class _FsImageDataset(Dataset):
    def __init__(self, fs: Any, samples: list[tuple[str, int]], transform: Any, transform_args: dict[str, Any] | None = None) -> None:
        self.fs, self.samples, self.transform = fs, samples, transform
        self.transform_args = dict(transform_args or {})  # image_transform's arguments (recorded by optimize)

    def __len__(self) -> int:
        return len(self.samples)

    def raw(self, i: int) -> tuple[bytes, int]:
        """The image file's bytes as stored (JPEG/PNG ...) and its label: what an optimized dataset keeps."""
        path, label = self.samples[i]
        with self.fs.open(path, "rb") as f:
            return f.read(), label

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with self.fs.open(path, "rb") as f:
            img = Image.open(io.BytesIO(f.read()))
            img.load()
        return self.transform(img), label


class ImageFolderDataModule(LightningDataModule):
    """Images in ``root/<class>/*.png`` (local path or fsspec URL, e.g. ``s3://bucket/pets``).

    If ``root`` has ``train/`` (and optionally ``val/``, ``test/``) sub-folders they are used as splits; a missing
    ``val/`` is a seeded hold-out of ``train/`` (``val_fraction``, and ``test_fraction`` for test when ``test/`` is
    missing too), said in a log line, so validation and the export gate never run on training images; a missing
    ``test/`` next to a ``val/`` tests on ``val/``. Without ``train/`` the one folder is split with a fixed seed.

    Args:
        root: local directory or fsspec URL.
        image_size: images are resized to ``image_size x image_size``.
        channels: 1 (grayscale) or 3 (RGB).
        batch_size: per-device batch size.
        val_fraction, test_fraction: split shares when ``root`` has no split folders (or no ``val/``).
        split_seed: seed of that split.
        num_workers: DataLoader workers.
        augment: random horizontal flips and crops on the training split.
        num_classes: optional check: must equal the number of class folders (``None``: discovered).

    Raises:
        FileNotFoundError: ``root`` is missing or holds no images (one line naming it), raised at construction.

    Example:
        >>> dm = ImageFolderDataModule("/data/pets", image_size=64)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 3,
        batch_size: int = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        num_workers: int = 0,
        augment: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise UserInputError(f"channels must be 1 or 3, got {channels}")
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters(ignore=["num_classes"])
        self.batch_size = batch_size
        fs, base = get_fs(root)
        if not fs.isdir(base):
            raise MissingInputError(f"data.root: no such directory: {root}")
        self._split_dirs = {s: f"{root.rstrip('/')}/{s}" for s in ("train", "val", "test") if fs.isdir(f"{base.rstrip('/')}/{s}")}
        scan_root = self._split_dirs.get("train", root)
        self.class_names, _, _ = scan_image_folder(scan_root)
        self.num_classes = len(self.class_names)
        check_num_classes(num_classes, self.num_classes)
        self.datasets: dict[str, Dataset] = {}

    def _transform_args(self) -> dict[str, Any]:
        return {"image_size": self.hparams.image_size, "channels": self.hparams.channels, "augment": self.hparams.augment}

    def _transform(self, train: bool) -> Any:
        return image_transform(train=train, **self._transform_args())

    @override
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if "train" in self._split_dirs:
            self._setup_split_folders()
            return
        _, samples, fs = scan_image_folder(self.hparams.root)
        train, val, test = split_indices(len(samples), self.hparams.val_fraction, self.hparams.test_fraction, self.hparams.split_seed)
        for split, idx in (("train", train), ("val", val), ("test", test)):
            self.datasets[split] = _FsImageDataset(fs, [samples[i] for i in idx], self._transform(split == "train"), self._transform_args())

    def _setup_split_folders(self) -> None:
        """``train/`` with optional ``val/`` and ``test/``; a missing ``val/`` (or ``test/``) is a seeded hold-out of
        ``train/``, never the training images themselves."""
        found: dict[str, tuple[Any, list[tuple[str, int]]]] = {}
        for split, src in self._split_dirs.items():
            classes, samples, fs = scan_image_folder(src)
            if classes != self.class_names:
                raise UserInputError(f"data.root: class folders of {src} {classes} differ from train's {self.class_names}")
            found[split] = (fs, samples)
        fs, samples = found["train"]
        held = {"val": self.hparams.val_fraction if "val" not in found else 0.0,
                "test": self.hparams.test_fraction if "test" not in found and "val" not in found else 0.0}
        if held["val"] or held["test"]:
            train, val, test = split_indices(len(samples), held["val"], held["test"], self.hparams.split_seed)
            if not train or (held["val"] and not val):
                raise UserInputError(
                    f"data.root: {self._split_dirs['train']} has {len(samples)} images, too few to hold out "
                    f"val_fraction={held['val']} for validation; add a val/ folder"
                )
            found["train"] = (fs, [samples[i] for i in train])
            found.setdefault("val", (fs, [samples[i] for i in val]))
            if held["test"]:
                found["test"] = (fs, [samples[i] for i in test])
            log.info(
                "ImageFolderDataModule: %s has no %s folder: held out a seeded split of train/ (split_seed=%d): "
                "%d train, %d val%s images", self.hparams.root, " or ".join(s + "/" for s in ("val", "test") if held[s]),
                self.hparams.split_seed, len(train), len(val), f", {len(test)} test" if held["test"] else "",
            )
        if "test" not in found:
            log.info("ImageFolderDataModule: %s has no test/ folder: testing on val/", self.hparams.root)
            found["test"] = found["val"]
        for split in ("train", "val", "test"):
            fs, samples = found[split]
            self.datasets[split] = _FsImageDataset(fs, samples, self._transform(split == "train"), self._transform_args())

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
