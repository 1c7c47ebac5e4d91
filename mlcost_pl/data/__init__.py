"""Bundled LightningDataModules."""

from mlcost_pl.data.cifar10 import CIFAR10DataModule
from mlcost_pl.data.digits import DigitsDataModule
from mlcost_pl.data.imagefolder import ImageFolderDataModule

__all__ = ["CIFAR10DataModule", "DigitsDataModule", "ImageFolderDataModule"]
