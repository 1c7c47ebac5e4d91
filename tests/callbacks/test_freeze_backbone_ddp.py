"""FreezeBackbone under DDP (2 gloo ranks on CPU): unfrozen parameters stay in sync across ranks."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from mlcost_pl.callbacks import FreezeBackbone
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier


class SaveRankWeights(Callback):
    def __init__(self, folder) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module):
        # Parameters only: BatchNorm buffers legitimately differ after the last local forward (DDP broadcasts them
        # from rank 0 at the start of each forward).
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        torch.save(params, f"{self.folder}/rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_unfrozen_backbone_stays_in_sync_across_ddp_ranks(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1, optimizer=functools.partial(torch.optim.AdamW, lr=1e-2))
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[FreezeBackbone(unfreeze_at=1), SaveRankWeights(tmp_path)],
    )
    trainer.fit(model, datamodule=DigitsDataModule(image_size=8, batch_size=16))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # The ranks saw different shards; without the callback's all-reduce the unfrozen backbone would diverge.
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert not torch.equal(r0["backbone.features.0.weight"], start["features.0.weight"])
