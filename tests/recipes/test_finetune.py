"""recipes.finetune: pretrain on digits 0-4, save the backbone, fine-tune on 5-9 with the backbone frozen."""

from __future__ import annotations

import pytest
import torch

from recipes.finetune import finetune
from tests.helpers.cfg import compose_cfg, fast_overrides


def test_pretrain_save_then_finetune_frozen(tmp_path):
    path = tmp_path / "weights" / "backbone.pt"
    cfg = compose_cfg(
        "train",
        fast_overrides("experiment=finetune", "data.image_size=8", "finetune.pretrain_epochs=1", f"finetune.backbone_path={path}"),
        tmp_path,
    )
    metrics, objects = finetune(cfg)
    saved = torch.load(path, weights_only=True)
    model = objects["model"]
    # The fine-tuned model started from the saved backbone and never changed it (frozen, BN included).
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert model.head.out_features == 5 and objects["datamodule"].classes == [5, 6, 7, 8, 9]
    assert "pretrain/time/wall_s" in metrics and "test/acc" in metrics
    assert metrics["finetune/trainable_params"] < metrics["finetune/total_params"]
    assert not list(path.parent.glob(".tmp-*"))  # no torn temporary left


def test_reuses_saved_weights_and_fails_clearly_without_them(tmp_path):
    cfg = compose_cfg("train", fast_overrides("experiment=finetune", "data.image_size=8", "finetune.pretrain=false", f"finetune.backbone_path={tmp_path}/none.pt"), tmp_path)
    with pytest.raises(FileNotFoundError, match="none.pt"):
        finetune(cfg)


def test_needs_the_experiment(tmp_path):
    with pytest.raises(ValueError, match="experiment=finetune"):
        finetune(compose_cfg("train", fast_overrides(), tmp_path))


def test_save_weights_to_an_fsspec_url():
    from mlcost_pl.finetune import save_weights
    from mlcost_pl.models import ImageClassifier

    src = ImageClassifier("tiny_cnn", num_classes=5, in_channels=1)
    save_weights(src.backbone, "memory://mlcost-test/bb/backbone.pt")
    dst = ImageClassifier("tiny_cnn", num_classes=5, in_channels=1, weights_path="memory://mlcost-test/bb/backbone.pt")
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(v, dst.backbone.state_dict()[k])
    with pytest.raises(ValueError, match="backbone_path"):
        save_weights(src.backbone, "")


def test_finetune_fast_learns(tmp_path):
    # The documented quick transfer example (TinyCNN, 16x16) trained its head at the whole-network settings (lr 0.002,
    # 5 epochs) and reached 0.32 test accuracy on digits 5-9; the head now trains at lr 0.03 for 20 epochs: 0.85.
    cfg = compose_cfg("train", ["experiment=finetune_fast", "trainer.enable_progress_bar=false"], tmp_path)
    metrics, _ = finetune(cfg)
    assert metrics["test/acc"] > 0.7, metrics["test/acc"]  # chance is 0.2
