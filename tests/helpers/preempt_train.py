"""A deterministic tiny CPU training run for the preemption tests and benchmark: ``python -m tests.helpers.preempt_train``.

SpotCheckpoint (every ``--every-n-steps``) resumes from the newest valid checkpoint in ``--dir/ckpt``; writes the global step to ``<dir>/progress`` after every batch (so
the parent can deliver signals at chosen steps) and, when it finishes, the final parameters to ``<dir>/final.pt``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from mlcost_pl.callbacks import PreemptionHandler, SpotCheckpoint
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.preemption.restart import PreemptedExit


class TinyMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class Progress(Callback):
    def __init__(self, dirpath: str, step_sleep: float) -> None:
        self.path, self.step_sleep = Path(dirpath) / "progress", step_sleep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        path = self.path.with_name(f"progress-rank{trainer.global_rank}") if trainer.world_size > 1 else self.path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{trainer.global_step} {os.getpid()}")
        os.replace(tmp, path)
        if self.step_sleep:
            time.sleep(self.step_sleep)


def run(dirpath: str, max_epochs: int = 3, limit_train_batches: int = 12, every_n_steps: int = 5, step_sleep: float = 0.0,
        handler: bool = True, devices: int = 1, check_every_n_steps: int = 2) -> dict[str, torch.Tensor]:
    """Train (resuming from the newest checkpoint in ``dirpath``); return the final parameters."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-reproducible reductions across processes
    try:
        L.seed_everything(0, verbose=False)
        Path(dirpath).mkdir(parents=True, exist_ok=True)
        dm = DigitsDataModule(image_size=8, batch_size=32)
        model = TinyMLP()
        spot = SpotCheckpoint(str(Path(dirpath, "ckpt")), every_n_steps=every_n_steps, keep_last=2, progress_every_seconds=0.01)
        callbacks = [spot, Progress(dirpath, step_sleep)]
        if handler:
            callbacks.append(PreemptionHandler(signals=["SIGTERM", "SIGUSR1"], check_every_n_steps=check_every_n_steps))
        trainer = L.Trainer(max_epochs=max_epochs, limit_train_batches=limit_train_batches, limit_val_batches=0,
                            callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=devices,
                            strategy="ddp" if devices > 1 else "auto")
        try:
            trainer.fit(model, datamodule=dm)  # SpotCheckpoint resumes from its newest valid checkpoint
            print(f"done: resumed from {spot.resumed_from}, lost steps {spot.lost_steps_total}", flush=True)
        except PreemptedExit:
            Path(dirpath, f"preempted-rank{trainer.global_rank}").write_text(str(trainer.global_step))
            raise
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--limit-train-batches", type=int, default=12)
    p.add_argument("--every-n-steps", type=int, default=5)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--devices", type=int, default=1)
    a = p.parse_args(argv)
    params = run(a.dir, a.max_epochs, a.limit_train_batches, a.every_n_steps, a.step_sleep, devices=a.devices)
    torch.save(params, Path(a.dir) / "final.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
