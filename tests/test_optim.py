"""optimizer=adamw8bit: bitsandbytes 8-bit AdamW from Python and from the config, on CPU (CUDA under -m gpu)."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from mlcost_pl.optim import adamw8bit
from recipes.train import train
from tests.helpers.cfg import compose_cfg, fast_overrides
from tests.helpers.runif import RunIf


def _train_steps(opt_factory, device="cpu", steps=30):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 4)).to(device)
    x, y = torch.randn(256, 64, device=device), torch.randint(0, 4, (256,), device=device)
    opt = opt_factory(net.parameters())
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return net, opt, losses


def test_adamw8bit_trains_on_cpu_with_uint8_state():
    net, opt, losses = _train_steps(lambda p: adamw8bit(p, lr=1e-2, min_8bit_size=0))
    assert losses[-1] < 0.8 * losses[0]
    assert opt.state[net[0].weight]["state1"].dtype == torch.uint8


def test_adamw8bit_bad_arguments_are_named():
    with pytest.raises(ValueError, match="lr"):
        adamw8bit([torch.nn.Parameter(torch.zeros(2))], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        adamw8bit([torch.nn.Parameter(torch.zeros(2))], betas=(0.9, 1.5))


def test_adamw8bit_from_config(tmp_path):
    cfg = compose_cfg("train", fast_overrides("optimizer=adamw8bit", "trainer.limit_train_batches=2", "test=false"), tmp_path)
    assert callable(instantiate(cfg.optimizer))
    _, objects = train(cfg)
    opt = objects["trainer"].optimizers[0]
    assert type(opt).__name__ == "AdamW8bit" and objects["trainer"].global_step == 2
    assert any(s.get("state1") is not None and s["state1"].dtype == torch.uint8 for s in opt.state.values())


@pytest.mark.gpu
@RunIf(cuda=True)
def test_adamw8bit_trains_on_cuda():
    net, opt, losses = _train_steps(lambda p: adamw8bit(p, lr=1e-2, min_8bit_size=0), device="cuda")
    assert losses[-1] < 0.8 * losses[0]
    assert opt.state[net[0].weight]["state1"].dtype == torch.uint8
