"""StoreConfig: the resolved training config travels inside each checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from mlcost_pl.callbacks import StoreConfig
from mlcost_pl.callbacks.store_config import CONFIG_KEY, plain_config
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier


def test_plain_config_resolves_and_drops_hydra():
    cfg = OmegaConf.create({"a": 1, "b": "${a}", "hydra": {"x": 1}})
    assert plain_config(cfg) == {"a": 1, "b": 1}
    with pytest.raises(ValueError, match="cfg must be a mapping"):
        plain_config([1, 2])


def test_bad_key_is_named():
    with pytest.raises(ValueError, match="key"):
        StoreConfig({}, key="")


def test_checkpoint_carries_config_and_survives_a_new_trainer(tmp_path):
    cfg = {"model": {"backbone": "tiny_cnn"}, "data": {"image_size": 8}}
    model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)
    trainer = L.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[StoreConfig(cfg)])
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, batch_size=32))
    path = tmp_path / "a.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt[CONFIG_KEY] == cfg
    # Resuming with a fresh, unconfigured callback does not break, and the next save still carries a config.
    cb = StoreConfig()
    trainer2 = L.Trainer(max_steps=3, limit_val_batches=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb])
    cb.set_config(OmegaConf.create(cfg))
    trainer2.fit(model, datamodule=DigitsDataModule(image_size=8, batch_size=32), ckpt_path=path)
    trainer2.save_checkpoint(tmp_path / "b.ckpt")
    assert torch.load(tmp_path / "b.ckpt", weights_only=False)[CONFIG_KEY] == cfg
