"""CPU peak-memory measurement of a real training step."""

from __future__ import annotations

import torch
from torch import nn

from mlcost_pl.optim import adamw8bit
from mlcost_pl.rightsizing.memory import measure_step_memory


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def test_parts_are_the_real_tensor_sizes():
    net = _net()
    n_bytes = sum(p.numel() * 4 for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters())
    mem = measure_step_memory(lambda: net(torch.randn(64, 256)).sum(), net, opt)
    assert mem.params_bytes == n_bytes
    assert mem.grads_bytes == n_bytes
    assert 2 * n_bytes <= mem.optimizer_bytes <= 2 * n_bytes + 6 * 64  # two moments (+ step scalars)
    # saved for backward: the input and the two hidden layers before and after ReLU (the ReLU output is shared)
    assert 64 * (256 + 512 + 512) * 4 <= mem.activations_bytes <= 64 * (256 + 4 * 512) * 4
    assert mem.peak_bytes == mem.params_bytes + mem.grads_bytes + mem.optimizer_bytes + mem.activations_bytes


def test_activations_grow_linearly_with_the_batch():
    net = _net()
    a = measure_step_memory(lambda: net(torch.randn(32, 256)).sum(), net).activations_bytes
    b = measure_step_memory(lambda: net(torch.randn(128, 256)).sum(), net).activations_bytes
    assert b == 4 * a


def test_eight_bit_optimizer_state_is_about_a_quarter():
    net = _net()
    full = measure_step_memory(lambda: net(torch.randn(8, 256)).sum(), net, torch.optim.AdamW(net.parameters()))
    net.zero_grad(set_to_none=True)
    small = measure_step_memory(lambda: net(torch.randn(8, 256)).sum(), net, adamw8bit(net.parameters()))
    assert small.optimizer_bytes < 0.3 * full.optimizer_bytes
