"""No per-step host sync under DDP from the default callbacks: count the collectives they issue per step, 2 gloo ranks.

SpotCheckpoint (with a time trigger), PreemptionHandler and CostMonitor (with a budget) used to broadcast after every
batch (SpotCheckpoint always, CostMonitor with ``max_usd``). Step triggers are now decided locally and the time,
budget and notice flags share one all-reduce every ``check_every_n_steps`` steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from mlcost_pl.callbacks import CostMonitor, PreemptionHandler, SpotCheckpoint
from tests.helpers.preempt_train import TinyMLP

COLLECTIVES = ("all_reduce", "broadcast", "broadcast_object_list", "barrier", "all_gather", "all_gather_object", "reduce")


class CollectiveCounter(Callback):
    """Counts torch.distributed calls made between a batch's start and the end of every callback's batch-end hook.

    Put it last in the callback list. The DDP gradient all-reduce runs in C++ and is not counted: only what callbacks
    and Lightning's Python layer issue.
    """

    def __init__(self, out: str) -> None:
        self.out, self.calls, self.in_step, self.steps = out, 0, False, 0
        self.per_step: list[int] = []

    def _wrap(self) -> None:
        for name in COLLECTIVES:
            fn = getattr(dist, name)
            if getattr(fn, "_counted", False):
                continue

            def counted(*args, _fn=fn, **kwargs):
                if self.in_step:
                    self.calls += 1
                return _fn(*args, **kwargs)

            counted._counted = True
            setattr(dist, name, counted)

    def on_train_start(self, trainer, pl_module):
        self._wrap()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.in_step, self._before = True, self.calls

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.in_step = False
        self.per_step.append(self.calls - self._before)

    def on_train_end(self, trainer, pl_module):
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.per_step))


def count_collectives(tmp_path: Path, steps: int = 30, check_every_n_steps: int = 10) -> list[list[int]]:
    """Per-step collective counts of each rank for a 2-process gloo fit with the default callbacks, saves off."""
    callbacks = [
        SpotCheckpoint(str(tmp_path / "ckpt"), every_n_steps=10**6, every_seconds=3600.0, save_on_fit_end=False),
        PreemptionHandler(check_every_n_steps=check_every_n_steps),
        CostMonitor(usd_per_hour=1.0, max_usd=1000.0),
        CollectiveCounter(str(tmp_path)),
    ]
    from mlcost_pl.data import DigitsDataModule

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_steps=steps, limit_val_batches=0,
                        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(TinyMLP(), datamodule=DigitsDataModule(image_size=8, batch_size=16))
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow  # two forked gloo ranks: ~25 s idle, over a minute on a busy machine
def test_default_callbacks_issue_one_collective_per_check_interval(tmp_path):
    counts = count_collectives(tmp_path, steps=30, check_every_n_steps=10)
    for per_step in counts:
        assert len(per_step) == 30
        # One shared flag all-reduce at steps 10, 20, 30 (notice + time trigger + budget); nothing in between.
        assert sum(per_step) == 3, per_step
        assert [i + 1 for i, n in enumerate(per_step) if n] == [10, 20, 30], per_step
    assert torch.distributed.is_available()
