from __future__ import annotations

import pytest
import torch

from mlcost_pl.models import ImageClassifier, build_backbone


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "tiny_cnn"])
def test_backbone_head_split_adapts_channels_and_classes(name):
    model = ImageClassifier(name, num_classes=7, in_channels=1)
    x = torch.randn(2, 1, 32, 32)
    feats = model.backbone(x)
    assert feats.shape == (2, model.num_features)
    assert model.head(feats).shape == (2, 7)


def test_unknown_backbone_error_lists_names():
    with pytest.raises(ValueError, match="Did you mean: resnet18") as info:
        build_backbone("resnet19", 10)
    assert "vit_b_16" in str(info.value)


def test_unknown_weights_name_is_named():
    with pytest.raises(ValueError, match="model.weights='NOPE'"):
        build_backbone("resnet18", 10, weights="NOPE")


@pytest.mark.parametrize("prefix", ["full", "backbone"])
def test_weights_path_local_and_memory(tmp_path, prefix):
    import fsspec

    src = ImageClassifier("tiny_cnn", num_classes=5, in_channels=1)
    state = src.state_dict() if prefix == "full" else src.backbone.state_dict()
    torch.save(state, tmp_path / "w.pt")
    with fsspec.open("memory://weights/w.pt", "wb") as f:
        torch.save(state, f)
    for url in (str(tmp_path / "w.pt"), "memory://weights/w.pt"):
        dst = ImageClassifier("tiny_cnn", num_classes=5, in_channels=1, weights_path=url)
        for (k, a), b in zip(src.backbone.state_dict().items(), dst.backbone.state_dict().values()):
            assert torch.equal(a, b), k


def test_missing_weights_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ImageClassifier("tiny_cnn", weights_path=str(tmp_path / "missing.pt"))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassifier("tiny_cnn", num_classes=1)
    with pytest.raises(ValueError, match="scheduler_interval"):
        ImageClassifier("tiny_cnn", scheduler_interval="batch")
