from __future__ import annotations

import pytest
import torch

from mlcost_pl.data import DigitsDataModule, ImageFolderDataModule


def test_split_is_fixed_and_disjoint():
    a, b = DigitsDataModule(image_size=8), DigitsDataModule(image_size=8)
    a.setup(), b.setup()
    assert torch.equal(a.data_test.tensors[0], b.data_test.tensors[0])
    sizes = [len(a.data_train), len(a.data_val), len(a.data_test)]
    assert sum(sizes) == 1797 and sizes[1] == sizes[2] == 270


def test_resize_channels_and_class_subset():
    dm = DigitsDataModule(image_size=20, channels=3, classes=[5, 6, 7, 8, 9], batch_size=16)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 20, 20)
    assert dm.num_classes == 5 and int(y.max()) <= 4 and int(y.min()) >= 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"image_size": 4}, "image_size"), ({"channels": 2}, "channels"), ({"classes": [3]}, "classes"),
     ({"val_fraction": 0.9, "test_fraction": 0.2}, "val_fraction"), ({"num_classes": 7}, "num_classes")],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        DigitsDataModule(**kwargs)


def test_imagefolder_local_and_memory_url(image_folder):
    import fsspec

    dm = ImageFolderDataModule(str(image_folder), image_size=16, channels=1, batch_size=4)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 16, 16) and dm.num_classes == 3

    mem = fsspec.filesystem("memory")
    for p in image_folder.rglob("*.png"):
        mem.pipe(f"/imgs/{p.parent.name}/{p.name}", p.read_bytes())
    dm2 = ImageFolderDataModule("memory://imgs", image_size=16, channels=3, batch_size=4)
    dm2.setup()
    assert dm2.class_names == ["class_0", "class_1", "class_2"]
    assert next(iter(dm2.val_dataloader()))[0].shape[1] == 3


def test_imagefolder_missing_root_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        ImageFolderDataModule(str(tmp_path / "nope"))
