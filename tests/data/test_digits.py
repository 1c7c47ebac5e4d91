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


def _split_tree(root, splits):
    """``root/<split>/class_<c>/<i>.png`` for each split in ``splits`` (name -> images per class), 3 classes."""
    import numpy as np
    from PIL import Image

    for split, n in splits.items():
        for cls in range(3):
            folder = root / split / f"class_{cls}"
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8), 40 * cls + i, np.uint8)).save(folder / f"{split}_{i}.png")
    return root


def test_imagefolder_train_without_val_holds_out_a_seeded_split_and_says_so(tmp_path, caplog):
    root = _split_tree(tmp_path, {"train": 20})
    with caplog.at_level("INFO", logger="mlcost_pl.data.imagefolder"):
        dm = ImageFolderDataModule(str(root), image_size=8, channels=1, batch_size=4, val_fraction=0.2, test_fraction=0.1)
        dm.setup("fit")
    files = {s: {p for p, _ in dm.datasets[s].samples} for s in ("train", "val", "test")}
    assert not files["train"] & files["val"] and not files["train"] & files["test"] and not files["val"] & files["test"]
    assert (len(files["train"]), len(files["val"]), len(files["test"])) == (42, 12, 6)
    assert "no val/ or test/ folder: held out a seeded split of train/ (split_seed=0): 42 train, 12 val, 6 test" in caplog.text
    again = ImageFolderDataModule(str(root), image_size=8, channels=1, val_fraction=0.2, test_fraction=0.1)
    again.setup("fit")
    assert {p for p, _ in again.datasets["val"].samples} == files["val"]  # seeded: the same hold-out every run


def test_imagefolder_with_test_but_no_val_holds_out_val_only(tmp_path):
    dm = ImageFolderDataModule(str(_split_tree(tmp_path, {"train": 10, "test": 2})), image_size=8, channels=1,
                               val_fraction=0.2)
    dm.setup("fit")
    train, val = ({p for p, _ in dm.datasets[s].samples} for s in ("train", "val"))
    assert len(val) == 6 and not train & val and all("/test/" in p for p, _ in dm.datasets["test"].samples)


def test_imagefolder_too_small_to_hold_out_is_one_line(tmp_path):
    dm = ImageFolderDataModule(str(_split_tree(tmp_path, {"train": 1})), image_size=8, channels=1, val_fraction=0.1,
                               test_fraction=0.1)
    with pytest.raises(ValueError, match=r"has 3 images, too few to hold out val_fraction=0.1 .* add a val/ folder"):
        dm.setup("fit")
