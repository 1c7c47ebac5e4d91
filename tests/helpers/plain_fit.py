"""A plain PyTorch training loop for fixtures and benchmarks that need a trained model in seconds (a Trainer costs
more than the training on these sizes)."""

from __future__ import annotations

import torch


def plain_fit(model: torch.nn.Module, datamodule, epochs: int, lr: float, seed: int = 0, threads: int | None = None):
    """Train ``model`` with AdamW and cross-entropy on ``datamodule``'s training split; return ``model.eval()``.

    ``threads`` sets torch's intra-op threads for the loop (restored after); one thread is fastest for tiny models.
    """
    torch.manual_seed(seed)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        datamodule.setup("fit")
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            for x, y in datamodule.train_dataloader():
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
    finally:
        torch.set_num_threads(before)
    return model.eval()
