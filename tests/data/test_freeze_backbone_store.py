"""FreezeBackbone(cache_features=<path>): a second fine-tune of the same backbone skips the backbone from epoch 1."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from mlcost_pl.callbacks import FreezeBackbone
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier


def _fit(store: str, epochs: int = 2):
    torch.manual_seed(0)
    model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))
    cb = FreezeBackbone(cache_features=store)
    trainer = L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[cb], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, batch_size=256))
    return trainer, cb, model


def test_second_run_is_served_from_the_store_from_its_first_epoch(tmp_path):
    store = str(tmp_path / "features")
    trainer, cb, cold = _fit(store)
    assert trainer.callback_metrics["feature_store/misses"] > 0
    trainer, cb, warm = _fit(store, epochs=1)  # another run: new process state, new model object, same weights
    assert trainer.callback_metrics["feature_store/misses"] == 0  # not one backbone pass
    assert trainer.callback_metrics["finetune/cache_hit_rate"] == 1.0
    assert trainer.callback_metrics["feature_store/compute_s_saved"] > 0
    assert "forward" not in warm.backbone.__dict__  # unpatched after fit


def test_unwritable_cache_url_fails_at_fit_start_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"cache_features=.* is not writable"):
        _fit(str(tmp_path / "file" / "features"), epochs=1)
    with pytest.raises(ValueError, match="cache_features"):
        FreezeBackbone(cache_features="   ")
