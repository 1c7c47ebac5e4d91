"""Pure logic of mlcost_pl.finetune: no Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlcost_pl.finetune import FeatureCache, UnfreezeSchedule, add_param_group, count_parameters, freeze, resolve_modules, split_groups, unfreeze
from mlcost_pl.models.backbones import TinyCNN


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = TinyCNN(in_channels=1, width=4)
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(8, 3)


# ---- freezing ---------------------------------------------------------------------------------------------------
def test_resolve_by_name_glob_and_outermost():
    net = Net()
    assert list(resolve_modules(net, "backbone")) == ["backbone"]
    assert list(resolve_modules(net, ["backbone", "backbone.features.*"])) == ["backbone"]
    assert list(resolve_modules(net, "backbone.features.[01]")) == ["backbone.features.0", "backbone.features.1"]


@pytest.mark.parametrize("bad", ["encoder", [], [""]])
def test_resolve_names_the_argument(bad):
    with pytest.raises(ValueError, match="modules"):
        resolve_modules(Net(), bad)


def test_freeze_is_real_and_unfreeze_restores():
    net = Net().train()
    freeze([net.backbone])
    bn = net.backbone.features[1]
    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(not m.training for m in net.backbone.modules()) and net.head.training
    before = bn.running_mean.clone()
    net.head(net.backbone(torch.randn(4, 1, 8, 8)))
    assert torch.equal(before, bn.running_mean)
    assert count_parameters(net) == (27, 27 + sum(p.numel() for p in net.backbone.parameters()))
    unfreeze([net.backbone])
    assert all(p.requires_grad for p in net.parameters()) and bn.training


def test_freeze_train_bn_keeps_norm_layers_training():
    net = Net().train()
    freeze([net.backbone], train_bn=True)
    bn, conv = net.backbone.features[1], net.backbone.features[0]
    assert bn.training and bn.weight.requires_grad and not conv.training and not conv.weight.requires_grad


def test_split_groups_from_the_head_down():
    net = Net()
    groups = split_groups(resolve_modules(net, "backbone"), 2)
    assert [list(g) for g in groups] == [["backbone.features.5", "backbone.features.4"], ["backbone.features.1", "backbone.features.0"]]
    assert [list(g) for g in split_groups({"backbone": net.backbone}, 1)] == [["backbone"]]
    with pytest.raises(ValueError, match="groups=9"):
        split_groups({"backbone": net.backbone}, 9)


# ---- schedule -----------------------------------------------------------------------------------------------------
def test_schedule_epoch_step_and_gradual():
    s = UnfreezeSchedule(at=2, groups=3, every=2, lr_multipliers=[0.5, 0.2, 0.1])
    assert s.due(epoch=1, step=100, done=[]) == []
    assert s.due(epoch=2, step=0, done=[]) == [0]
    assert s.due(epoch=9, step=0, done=[0]) == [1, 2]  # resumed past two thresholds: both, head first
    assert s.multiplier(2) == 0.1
    st = UnfreezeSchedule(at=10, interval="step")
    assert st.due(epoch=50, step=9, done=[]) == [] and st.due(epoch=0, step=10, done=[]) == [0]
    assert UnfreezeSchedule().due(epoch=99, step=99, done=[]) == []


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"interval": "batch"}, "unfreeze_interval"),
        ({"at": -1}, "unfreeze_at"),
        ({"every": 0}, "unfreeze_every"),
        ({"groups": 0}, "groups"),
        ({"groups": 2, "lr_multipliers": [0.1]}, "lr_multipliers"),
        ({"lr_multipliers": 0.0}, "lr_multipliers"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UnfreezeSchedule(**kwargs)


# ---- optimizer surgery --------------------------------------------------------------------------------------------
def test_equal_valued_parameter_is_added_by_identity():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(3))  # equal in value to a: Lightning's torch.equal matching would skip it
    opt = torch.optim.SGD([a], lr=1.0)
    group = add_param_group(opt, [a, b, b], lr_multiplier=0.5)
    assert group is not None and len(group["params"]) == 1 and group["params"][0] is b and group["lr"] == 0.5
    assert add_param_group(opt, [a, b]) is None  # nothing new


def test_scheduler_keeps_driving_the_new_group():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([a], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    opt.step()
    sched.step()
    lr0 = opt.param_groups[0]["lr"]
    add_param_group(opt, [b], lr_multiplier=0.1, schedulers=[sched])
    assert sched.base_lrs == [1.0, pytest.approx(0.1)] and opt.param_groups[1]["lr"] == pytest.approx(lr0 * 0.1)
    for _ in range(3):
        opt.step()
        sched.step()
    # Both groups follow the cosine to 0 at T_max (a group unknown to the scheduler would stay at lr0 * 0.1).
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.0, abs=1e-12)
    sd = sched.state_dict()
    assert len(sd["base_lrs"]) == 2


def test_onecycle_and_plateau_are_extended():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([a], lr=1.0, momentum=0.9)
    oc = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    add_param_group(opt, [b], lr_multiplier=0.1, schedulers=[oc])
    assert opt.param_groups[1]["max_lr"] == pytest.approx(0.1)
    for _ in range(5):
        opt.step()
        oc.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(opt.param_groups[0]["lr"] * 0.1)
    opt2 = torch.optim.SGD([a], lr=1.0)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, min_lr=1e-4)
    add_param_group(opt2, [b], schedulers=[plateau])
    assert plateau.min_lrs == [1e-4, 1e-4]
    plateau.step(1.0)


# ---- feature cache ------------------------------------------------------------------------------------------------
def test_feature_cache_serves_exact_features_in_any_order():
    net = TinyCNN(in_channels=1, width=4).eval()
    net.fc = nn.Identity()
    cache = FeatureCache()
    x = torch.randn(10, 1, 8, 8)
    with torch.no_grad():
        first = cache(net, x)
        perm = torch.randperm(10)
        again = cache(net, x[perm])
        mixed = cache(net, torch.cat([x[:3], torch.randn(2, 1, 8, 8)]))
    assert torch.equal(again, first[perm]) and cache.hits == 13 and cache.misses == 12
    assert torch.equal(mixed[:3], first[:3]) and len(cache) == 12
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_feature_cache_respects_its_memory_cap():
    cache = FeatureCache(max_bytes=3 * 4 * 2)  # three rows of two float32
    out = cache(lambda t: t * 2, torch.arange(10.0).view(5, 2))
    assert torch.equal(out, torch.arange(10.0).view(5, 2) * 2) and len(cache) == 3 and cache.full
    with pytest.raises(ValueError, match="cache_max_bytes"):
        FeatureCache(0)
