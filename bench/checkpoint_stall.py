"""How long checkpointing blocks the training loop: SpotCheckpoint async vs sync vs Lightning's ModelCheckpoint.

``uv run python -m bench.checkpoint_stall [--quick] [--dirpath DIR]``

One model (default: a 2048-wide MLP + AdamW, 8.9 M parameters, ~107 MB of checkpoint, cheap steps so the shared CPU
finishes; ``--model resnet18`` for ResNet-18 + AdamW, ~135 MB), one storage target (a local folder), one run:
the three variants are interleaved, several repeats each. The blocked time of a checkpoint is the wall time of the
checkpoint callback's ``on_train_batch_end`` call that saved it (the same external stopwatch for all three). Because
a background write also slows the steps around it (it competes for CPU, memory bandwidth and the disk), the total
training time over the whole window (first step to the end of training, the last background write included) is also
measured per variant and compared with a fourth variant that does not checkpoint at all: the extra seconds per
checkpoint are what saving really costs the loop. Prints medians and ratios; the goal is async <= 10 % of a
synchronous save.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from mlcost_pl.callbacks import SpotCheckpoint
from mlcost_pl.models import ImageClassifier


def _stopwatch(callback: Callback, every: int, samples: list[float]) -> None:
    """Time the callback's ``on_train_batch_end`` at the steps where it checkpoints."""
    inner = callback.on_train_batch_end

    def timed(trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        inner(trainer, *args, **kwargs)
        elapsed = time.perf_counter() - start
        if trainer.global_step % every == 0:
            samples.append(elapsed)

    callback.on_train_batch_end = timed  # type: ignore[method-assign]


class WideMLP(L.LightningModule):
    """Tens of MB of state (weights + AdamW moments) for little compute per step."""

    def __init__(self, width: int = 2048) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(256, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
            torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10),
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


class Window(Callback):
    """Wall time from the first step's start to the end of training (put last: after every other on_train_end)."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == 0 and not hasattr(self, "t0"):
            self.t0 = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def _run(variant: str, dirpath: Path, every: int, saves: int, image: int, model_name: str) -> tuple[list[float], float]:
    L.seed_everything(0, verbose=False)
    samples: list[float] = []
    if variant == "lightning":
        cb: Callback = ModelCheckpoint(dirpath=dirpath, every_n_train_steps=every, save_top_k=-1, save_on_train_epoch_end=False)
    elif variant == "none":
        cb = Callback()
    else:
        cb = SpotCheckpoint(str(dirpath), every_n_steps=every, keep_last=3, async_save=variant == "async", save_on_fit_end=False, on_busy="wait")
    if variant != "none":
        _stopwatch(cb, every, samples)
    window = Window()
    steps = every * saves
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * 8, 1, image, image, generator=g), torch.randint(0, 10, (steps * 8,), generator=g))
    model = ImageClassifier("resnet18", num_classes=10, in_channels=1) if model_name == "resnet18" else WideMLP()
    trainer = L.Trainer(
        max_steps=steps, callbacks=[cb, window], logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=variant == "lightning", limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(model, DataLoader(data, batch_size=8))
    shutil.rmtree(dirpath, ignore_errors=True)
    return samples, window.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats x 3 checkpoints per variant")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--dirpath", default=None, help="local folder to write to (default: a temporary folder)")
    parser.add_argument("--model", choices=["mlp", "resnet18"], default="mlp")
    parser.add_argument("--every", type=int, default=40, help="steps between checkpoints (enough for a background write to finish)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 4)
    saves = 3 if args.quick else 5
    root = Path(args.dirpath or tempfile.mkdtemp(prefix="checkpoint_stall-"))
    variants = ["async", "sync", "lightning", "none"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    windows: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(repeats):
        for v in variants if r % 2 == 0 else reversed(variants):
            samples, window = _run(v, root / f"{v}-{r}", args.every, saves, image=16, model_name=args.model)
            results[v] += samples
            windows[v].append(window)
            print(f"repeat {r + 1}/{repeats} {v:9s} training window {window:.2f} s; blocked per checkpoint: "
                  f"{', '.join(f'{s:.3f}' for s in samples) or '-'} s", flush=True)
    total = {v: statistics.median(windows[v]) for v in variants}
    variants = variants[:3]
    med = {v: statistics.median(results[v]) for v in variants}
    what = "ResNet-18 + AdamW (~135 MB checkpoint)" if args.model == "resnet18" else "2048-wide MLP + AdamW (~107 MB checkpoint)"
    print(f"\n{what}, local folder {root}, every {args.every} steps, {repeats} repeats x {saves} checkpoints each")
    print(f"{'variant':28s} {'median blocked s':>18s} {'vs sync':>9s} {'vs Lightning':>13s}")
    names = {"async": "SpotCheckpoint async", "sync": "SpotCheckpoint sync", "lightning": "Lightning ModelCheckpoint"}
    for v in variants:
        print(f"{names[v]:28s} {med[v]:18.3f} {med[v] / med['sync']:9.3f} {med[v] / med['lightning']:13.3f}")
    print(f"\n{'variant':28s} {'median window s':>16s} {'extra s per checkpoint vs none':>31s}   (no checkpoint: {total['none']:.2f} s)")
    for v in variants:
        print(f"{names[v]:28s} {total[v]:16.2f} {(total[v] - total['none']) / saves:31.3f}")
    ratio = med["async"] / med["sync"]
    print(f"\nasync blocks {100 * ratio:.1f} % of a synchronous SpotCheckpoint save (goal <= 10 %): {'met' if ratio <= 0.10 else 'NOT met'}")
    shutil.rmtree(root, ignore_errors=True) if args.dirpath is None else None


if __name__ == "__main__":
    main()
