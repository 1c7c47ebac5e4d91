"""FreezeBackbone on a real CPU Trainer: tiny models, 8x8 digits, a few steps."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from mlcost_pl.callbacks import FreezeBackbone
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier


def _trainer(tmp_path, callbacks, **kw) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    defaults.update(kw)
    return L.Trainer(callbacks=callbacks, **defaults)


def _model(scheduler=None) -> ImageClassifier:
    return ImageClassifier(
        "tiny_cnn",
        num_classes=10,
        in_channels=1,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-2),
        scheduler=scheduler,
    )


def _dm(**kw) -> DigitsDataModule:
    return DigitsDataModule(image_size=8, batch_size=kw.pop("batch_size", 32), **kw)


class Record(Callback):
    """Snapshot the optimizer's LRs at every train epoch start (after FreezeBackbone's), BN running mean and a conv
    weight at every train epoch end."""

    def __init__(self) -> None:
        self.bn, self.conv, self.lrs = [], [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.bn.append(pl_module.backbone.features[1].running_mean.clone())
        self.conv.append(pl_module.backbone.features[0].weight.detach().clone())

    def on_train_epoch_start(self, trainer, pl_module):
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_frozen_backbone_is_bit_identical_and_head_trains(tmp_path):
    torch.manual_seed(0)
    model = _model()
    backbone0 = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head0 = model.head.weight.detach().clone()
    cb = FreezeBackbone()
    trainer = _trainer(tmp_path, [cb], max_epochs=2)
    trainer.fit(model, datamodule=_dm())
    for k, v in model.backbone.state_dict().items():  # weights AND BatchNorm running stats
        assert torch.equal(v, backbone0[k]), k
    assert not torch.equal(model.head.weight, head0)
    m = trainer.callback_metrics
    assert m["finetune/trainable_params"] == sum(p.numel() for p in model.head.parameters())
    assert m["finetune/total_params"] == sum(p.numel() for p in model.parameters())
    assert m["finetune/frozen_groups"] == 1 and m["finetune/epoch_s_frozen"] > 0 and "finetune/epoch_s_unfrozen" not in m


def test_bn_stats_frozen_then_moving_after_unfreeze_and_scheduler_drives_new_group(tmp_path):
    torch.manual_seed(0)
    sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)
    model = _model(scheduler=sched)
    bn0 = model.backbone.features[1].running_mean.clone()
    rec = Record()
    trainer = _trainer(tmp_path, [FreezeBackbone(unfreeze_at=1, lr_multipliers=0.1), rec], max_epochs=3)
    trainer.fit(model, datamodule=_dm())
    assert torch.equal(rec.bn[0], bn0) and not torch.equal(rec.bn[1], rec.bn[0])
    assert not torch.equal(rec.conv[1], rec.conv[0]) and not torch.equal(rec.conv[2], rec.conv[1])
    # StepLR halves every epoch; the group added at epoch 1 starts at 0.1 x the head's current LR and halves too.
    assert rec.lrs[0] == [pytest.approx(1e-2)]
    assert rec.lrs[1] == [pytest.approx(5e-3), pytest.approx(5e-4)]
    assert rec.lrs[2] == [pytest.approx(2.5e-3), pytest.approx(2.5e-4)]
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [pytest.approx(1e-2), pytest.approx(1e-3)]
    assert trainer.callback_metrics["finetune/epoch_s_unfrozen"] > 0


class EqualParams(L.LightningModule):
    """A backbone bias that is value-equal to the head bias (both zero): BackboneFinetuning would never train it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Linear(4, 4)
        with torch.no_grad():
            self.backbone.bias.zero_()
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)))

    def training_step(self, batch, batch_idx):
        x = torch.randn(8, 4)
        return nn.functional.cross_entropy(self(x), (x.sum(1) > 0).long())

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(16, 1), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def test_value_equal_parameter_is_trained(tmp_path):
    torch.manual_seed(0)
    model = EqualParams()
    with torch.no_grad():  # make the whole backbone value-equal to the head
        model.backbone.weight.copy_(model.head.weight)
    bias0 = model.backbone.bias.clone()
    cb = FreezeBackbone(unfreeze_at=2, unfreeze_interval="step", lr_multipliers=1.0)
    trainer = _trainer(tmp_path, [cb], limit_train_batches=6)
    trainer.fit(model)
    assert len(trainer.optimizers[0].param_groups) == 2
    assert {id(p) for p in trainer.optimizers[0].param_groups[1]["params"]} == {id(p) for p in model.backbone.parameters()}
    assert not torch.equal(model.backbone.bias, bias0)


def test_gradual_resume_mid_schedule_from_a_real_checkpoint(tmp_path):
    """Group 0 unfreezes at epoch 1, group 1 at epoch 3; stop after epoch 2, resume in a new Trainer."""
    kw = dict(unfreeze_at=1, groups=2, unfreeze_every=2, lr_multipliers=[0.5, 0.1])
    sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)

    torch.manual_seed(0)
    straight = _model(sched)
    rec_straight = Record()
    _trainer(tmp_path / "a", [FreezeBackbone(**kw), rec_straight], max_epochs=4).fit(straight, datamodule=_dm())

    torch.manual_seed(0)
    first = _model(sched)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cb1 = FreezeBackbone(**kw)
    _trainer(tmp_path / "b", [cb1, ckpt], max_epochs=2, enable_checkpointing=True).fit(first, datamodule=_dm())
    assert cb1.unfrozen == [0]
    # Round trip through state_dict alone.
    cb_copy = FreezeBackbone(**kw)
    cb_copy.load_state_dict(cb1.state_dict())
    assert cb_copy.unfrozen == [0] and cb_copy.timing == cb1.timing

    resumed = _model(sched)  # fresh weights: everything comes from the checkpoint
    cb2 = FreezeBackbone(**kw)
    rec = Record()
    trainer = _trainer(tmp_path / "c", [cb2, rec], max_epochs=4)
    trainer.fit(resumed, datamodule=_dm(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert cb2.unfrozen == [0, 1]
    g0, g1 = cb2._groups  # group 0: features.4/5 (near the head), group 1: features.0/1 (the stem)
    # Epoch 2 (first after resume): group 0 kept training (not re-frozen), group 1 still frozen (conv 0 unchanged).
    stem = first.backbone.features[0].weight.detach()
    assert torch.equal(rec.conv[0], stem)
    assert not torch.equal(resumed.backbone.features[4].weight, first.backbone.features[4].weight)
    assert not torch.equal(rec.conv[1], rec.conv[0])  # epoch 3: the stem trains
    # Same param groups and the same LRs as the uninterrupted run: the optimizer and scheduler state resumed.
    assert rec.lrs == [pytest.approx(x) for x in rec_straight.lrs[2:]]
    assert len(trainer.optimizers[0].param_groups) == 3
    assert trainer.callback_metrics["finetune/epoch_s_frozen"] > 0  # cumulative timings survived the resume


class NoisyDigits(DigitsDataModule):
    """Digits with a random per-sample perturbation: a non-deterministic transform the cache must detect."""

    def train_dataloader(self):
        loader = super().train_dataloader()
        return torch.utils.data.DataLoader(
            loader.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            collate_fn=lambda rows: (torch.stack([r[0] for r in rows]) + 0.01 * torch.randn(len(rows), 1, 8, 8), torch.stack([r[1] for r in rows])),
        )


def test_cached_feature_path_matches_the_uncached_run(tmp_path):
    heads = []
    for cache in (False, True):
        torch.manual_seed(0)
        model = _model()
        trainer = _trainer(tmp_path, [FreezeBackbone(cache_features=cache)], max_epochs=3, limit_train_batches=None, limit_val_batches=None)
        trainer.fit(model, datamodule=_dm(batch_size=256))
        heads.append(model.head.weight.detach().clone())
    assert trainer.callback_metrics["finetune/cache_hit_rate"] == 1.0  # epoch 3: every train and val sample cached
    assert trainer.callback_metrics["finetune/cache_mb"] > 0
    torch.testing.assert_close(heads[1], heads[0], rtol=1e-4, atol=1e-5)
    assert "forward" not in model.backbone.__dict__  # the patch is gone after fit


def test_cache_switches_off_on_a_random_transform(tmp_path):
    cb = FreezeBackbone(cache_features=True)
    trainer = _trainer(tmp_path, [cb], max_epochs=2, limit_train_batches=None, limit_val_batches=0)
    with pytest.warns(UserWarning, match="not deterministic"):
        trainer.fit(_model(), datamodule=NoisyDigits(image_size=8, batch_size=512))
    assert not cb._patched and len(cb.cache) == 0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"modules": []}, "modules"),
        ({"unfreeze_interval": "batch"}, "unfreeze_interval"),
        ({"cache_features": True, "train_bn": True}, "cache_features"),
        ({"groups": 2, "lr_multipliers": [0.1]}, "lr_multipliers"),
        ({"cache_max_bytes": 0}, "cache_max_bytes"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FreezeBackbone(**kwargs)


def test_unknown_module_is_named_at_fit(tmp_path):
    with pytest.raises(ValueError, match="'encoder'"):
        _trainer(tmp_path, [FreezeBackbone("encoder")]).fit(_model(), datamodule=_dm())
