"""Goodput under preemptions: ``uv run python -m bench.preemption_goodput [--quick]``.

The same training run (a tiny MLP on the bundled digits, 40 steps per epoch) under the same seeded schedule of
preemptions, delivered as real SIGTERMs to this process after a seeded number of executed steps per attempt:

(a) ours: SpotCheckpoint + PreemptionHandler: the notice makes an emergency checkpoint at the current step; the
    attempt ends with ``PreemptedExit`` (exit code 75) and is restarted (the supervisor's policy, in-process so
    that interpreter start-up is not counted), resuming mid-epoch exactly;
(b) baseline: Lightning's ModelCheckpoint every epoch (``save_last=True``), restarted with ``ckpt_path="last"``;
    Lightning's own SIGTERM handling stops the attempt after the current step.

Goodput = useful steps (the run's final global step) / executed steps (every training step of every attempt).
Repeats interleave (a) and (b) with a different schedule each; medians are printed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mlcost_pl.callbacks import PreemptionHandler, SpotCheckpoint
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.preemption.restart import PreemptedExit, is_preemption

STEPS_PER_EPOCH = 40  # 1,258 training digits / batch 32


class TinyMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


class Preempt(Callback):
    """Counts executed steps; after ``after_steps`` of this attempt sends a real SIGTERM to this process."""

    def __init__(self, after_steps: int | None) -> None:
        self.after_steps, self.executed = after_steps, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.executed += 1
        if self.executed == self.after_steps:
            os.kill(os.getpid(), signal.SIGTERM)


def _trainer(epochs: int, callbacks: list) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1)


def run_one(method: str, epochs: int, gaps: list[int], workdir: Path) -> dict[str, float]:
    """Train to the end under the preemption schedule ``gaps``; return steps, preemptions and wall seconds."""
    executed, preemptions, attempt = 0, 0, 0
    start = time.perf_counter()
    while True:
        L.seed_everything(0, verbose=False)
        killer = Preempt(gaps[attempt] if attempt < len(gaps) else None)
        model, dm = TinyMLP(), DigitsDataModule(image_size=8, batch_size=32)
        if method == "ours":
            callbacks = [killer, SpotCheckpoint(str(workdir / "spot")), PreemptionHandler(signals=["SIGTERM"], grace_seconds=30)]
            trainer, ckpt_path = _trainer(epochs, callbacks), None
        else:
            mc = ModelCheckpoint(dirpath=str(workdir / "mc"), save_last=True, every_n_epochs=1)
            trainer = _trainer(epochs, [killer, mc])
            ckpt_path = "last" if attempt else None
        code = 0
        try:
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        except SystemExit as exit_:  # PreemptedExit (75) for ours, Lightning's SIGTERMException for the baseline
            code = exit_.code if isinstance(exit_, PreemptedExit) else -signal.SIGTERM
        executed += killer.executed
        attempt += 1
        if code == 0:
            return {"useful": float(trainer.global_step), "executed": float(executed), "preemptions": float(preemptions),
                    "wall_s": time.perf_counter() - start}
        assert is_preemption(code), code
        preemptions += 1
        if attempt > 200:
            raise RuntimeError(f"{method}: no progress after {attempt} attempts")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 repeats x 4 epochs instead of 3 x 8")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    repeats = a.repeats or (2 if a.quick else 3)
    epochs = a.epochs or (4 if a.quick else 8)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rows: dict[str, list[dict[str, float]]] = {"ours": [], "baseline": []}
    for r in range(repeats):
        rng = random.Random(a.seed + r)
        # Steps of work between preemptions: 0.5 to 2 epochs (a preemption every ~50 s of a real 1 step/s job).
        gaps = [rng.randint(STEPS_PER_EPOCH // 2, 2 * STEPS_PER_EPOCH) for _ in range(200)]
        for method in (("ours", "baseline") if r % 2 == 0 else ("baseline", "ours")):
            workdir = Path(tempfile.mkdtemp(prefix=f"goodput-{method}-"))
            try:
                row = run_one(method, epochs, gaps, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            row["goodput"] = row["useful"] / row["executed"]
            rows[method].append(row)
            print(f"repeat {r} {method:8s}: useful {row['useful']:.0f} / executed {row['executed']:.0f} steps = "
                  f"{row['goodput']:.3f} ({row['preemptions']:.0f} preemptions, {row['wall_s']:.1f} s)", flush=True)
    med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in rows.items()}
    print(f"\nmedians over {repeats} repeats, {epochs} epochs x {STEPS_PER_EPOCH} steps, same preemption schedule:")
    print(f"{'method':42s} {'useful':>7s} {'executed':>9s} {'goodput':>8s} {'preempt.':>8s} {'wall s':>7s}")
    names = {"ours": "(a) SpotCheckpoint + PreemptionHandler", "baseline": "(b) ModelCheckpoint/epoch + ckpt_path=last"}
    for m in ("ours", "baseline"):
        x = med[m]
        print(f"{names[m]:42s} {x['useful']:7.0f} {x['executed']:9.0f} {x['goodput']:8.3f} {x['preemptions']:8.1f} {x['wall_s']:7.1f}")
    print(f"goodput ratio ours/baseline: {med['ours']['goodput'] / med['baseline']['goodput']:.3f}  "
          f"(goal: ours >= 0.99: {'met' if med['ours']['goodput'] >= 0.99 else 'NOT met'})")


if __name__ == "__main__":
    main()
