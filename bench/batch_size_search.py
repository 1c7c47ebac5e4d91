"""BatchSizeSearch vs Lightning's BatchSizeFinder(mode="binsearch"), and throughput mode's pick vs the best measured.

    uv run python -m bench.batch_size_search [--quick]

Part 1, max_fit: both search the same model under the same memory limit. The model's step raises
``torch.OutOfMemoryError("CUDA out of memory ...")`` (which both tools recognise) when the step's memory would exceed
``--limit-mb``; that memory is *measured* per sample with ``mlcost_pl.rightsizing.measure_step_memory`` (parameters,
gradients, AdamW state, saved activations) and is linear in the batch. Ours also runs a third way: no simulated OOM,
``max_memory_gb`` set to the same limit, checked against the measured peak of each trial. Runs are interleaved,
``--repeats`` times; medians of wall time (the whole ``fit``/``scale_batch_size`` call), trials, training steps and
batch found. Two settings are quoted: each tool's defaults (ours starts at 32 and runs 1 step per trial; Lightning
starts at 2 and runs 3 training steps, plus validation steps, per trial), and matched settings (both start at the
model's batch of 2 and run 1 training step per trial).

Part 2, throughput: ``BatchSizeSearch(mode="throughput")`` on the tiny CNN over the bundled digits picks a batch;
then every power-of-two candidate is re-measured (interleaved rounds, median) and the pick's samples/s is compared with
the best.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlcost_pl.callbacks import BatchSizeSearch
from mlcost_pl.rightsizing.memory import GIB, measure_step_memory


class BudgetMLP(LightningModule):
    """An MLP whose step raises a CUDA-style OOM when its measured memory would exceed ``limit_bytes``."""

    def __init__(self, limit_bytes: int | None, batch_size: int = 2, width: int = 512, n: int = 16384) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.net = nn.Sequential(nn.Linear(256, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
        g = torch.Generator().manual_seed(0)
        self.data = TensorDataset(torch.randn(n, 256, generator=g), torch.randint(0, 10, (n,), generator=g))
        self.limit_bytes = limit_bytes
        self.trials = 0
        # Real per-sample and fixed memory of one AdamW step, measured at two batch sizes.
        m1, m2 = (self._measure(b) for b in (64, 128))
        self.per_sample = (m2 - m1) / 64
        self.fixed = m1 - 64 * self.per_sample
        self.net.zero_grad(set_to_none=True)

    def _measure(self, b: int) -> int:
        x, y = self.data.tensors[0][:b], self.data.tensors[1][:b]
        opt = torch.optim.AdamW(self.net.parameters())
        return measure_step_memory(lambda: F.cross_entropy(self.net(x), y), self.net, opt).peak_bytes

    def bytes_for(self, b: int) -> float:
        return self.fixed + self.per_sample * b

    def limit_batch(self) -> int:
        return int((self.limit_bytes - self.fixed) // self.per_sample)

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.trials += 1
        if self.limit_bytes is not None and self.bytes_for(len(x)) > self.limit_bytes:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {self.bytes_for(len(x)):.0f} bytes")
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):  # Lightning's finder also runs validation steps per trial
        return DataLoader(self.data, batch_size=self.batch_size)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        if self.limit_bytes is not None and self.bytes_for(len(x)) > self.limit_bytes:
            raise torch.OutOfMemoryError("CUDA out of memory (validation)")


def _trainer(**kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def run_ours(limit_bytes: int, budget_mode: bool, init: int = 32) -> dict:
    model = BudgetMLP(None if budget_mode else limit_bytes)
    cb = BatchSizeSearch(mode="max_fit", use_cache=False, max_batch_size=16384, init_batch_size=init,
                         max_memory_gb=limit_bytes / GIB if budget_mode else None)
    model.trials = 0
    start = time.perf_counter()
    _trainer(max_steps=0, callbacks=[cb]).fit(model)
    return {"s": time.perf_counter() - start, "trials": cb.result.num_trials, "steps": model.trials,
            "batch": cb.result.batch_size}


def run_lightning(limit_bytes: int, steps_per_trial: int = 3) -> dict:
    from lightning.pytorch.tuner import Tuner

    model = BudgetMLP(limit_bytes)
    model.trials = 0
    trainer = _trainer(max_epochs=1)
    start = time.perf_counter()
    found = Tuner(trainer).scale_batch_size(model, mode="binsearch", max_val=16384, steps_per_trial=steps_per_trial)
    return {"s": time.perf_counter() - start, "trials": None, "steps": model.trials, "batch": int(found)}


ARMS = {  # name -> (settings, runner)
    "ours max_fit, OOM (defaults: start 32)": ("defaults", lambda lim: run_ours(lim, False, init=32)),
    "ours max_fit, max_memory_gb (defaults: start 32)": ("defaults", lambda lim: run_ours(lim, True, init=32)),
    "Lightning binsearch (defaults: start 2, 3 steps/trial)": ("defaults", lambda lim: run_lightning(lim, 3)),
    "ours max_fit, OOM (matched: start 2, 1 step/trial)": ("matched", lambda lim: run_ours(lim, False, init=2)),
    "Lightning binsearch (matched: start 2, 1 step/trial)": ("matched", lambda lim: run_lightning(lim, 1)),
}


def max_fit_part(limit_mb: float, repeats: int) -> None:
    limit = int(limit_mb * 2**20)
    ref = BudgetMLP(limit)
    true_limit = ref.limit_batch()
    print(f"\n## max_fit: MLP 256-512-512-10, AdamW, memory limit {limit_mb:.0f} MiB -> largest batch that fits = {true_limit}")
    print(f"(measured per sample {ref.per_sample / 1024:.1f} KiB, fixed {ref.fixed / 2**20:.1f} MiB)")
    rows: dict[str, list[dict]] = {name: [] for name in ARMS}
    for r in range(repeats):
        for name in (list(ARMS) if r % 2 == 0 else list(reversed(ARMS))):  # interleaved, alternating order
            rows[name].append(ARMS[name][1](limit))
    print("| tool (settings) | median wall s | trials | training steps | batch found | % of limit |")
    print("| --- | --- | --- | --- | --- | --- |")
    med = {}
    for name, runs in rows.items():
        med[name] = {k: statistics.median(x[k] for x in runs) for k in ("s", "steps", "batch")}
        trials = "-" if runs[0]["trials"] is None else f"{statistics.median(x['trials'] for x in runs):.0f}"
        m = med[name]
        print(f"| {name} | {m['s']:.2f} | {trials} | {m['steps']:.0f} | {m['batch']:.0f} | {100 * m['batch'] / true_limit:.1f} |")
    for settings in ("defaults", "matched"):
        ours = next(n for n in ARMS if ARMS[n][0] == settings and n.startswith("ours") and "OOM" in n)
        theirs = next(n for n in ARMS if ARMS[n][0] == settings and n.startswith("Lightning"))
        print(f"time ratio Lightning / ours (OOM), {settings}: {med[theirs]['s'] / med[ours]['s']:.2f}x; "
              f"training steps {med[theirs]['steps']:.0f} vs {med[ours]['steps']:.0f}")


def throughput_part(repeats: int, steps: int) -> None:
    from mlcost_pl.data import DigitsDataModule
    from mlcost_pl.models import ImageClassifier

    torch.manual_seed(0)
    dm = DigitsDataModule(image_size=16, batch_size=16)
    model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)
    cb = BatchSizeSearch(mode="throughput", init_batch_size=16, use_cache=False, measure_steps=steps, throughput_tolerance=0.05)
    _trainer(max_steps=0, callbacks=[cb]).fit(model, datamodule=dm)
    picked, speeds = cb.result.batch_size, cb.result.samples_per_s
    # Re-measure every candidate: interleaved rounds, median of per-step samples/s.
    dm.setup("fit")
    x_all, y_all = next(iter(DataLoader(dm.train_dataloader().dataset, batch_size=1 << 14)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    ref: dict[int, list[float]] = {b: [] for b in speeds}
    for _ in range(repeats):
        for b in speeds:
            xb, yb = x_all[:b], y_all[:b]
            F.cross_entropy(model(xb), yb).backward()  # warm-up
            opt.zero_grad(set_to_none=True)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                times.append(time.perf_counter() - t0)
            ref[b].append(b / statistics.median(times))
    med = {b: statistics.median(v) for b, v in ref.items()}
    best = max(med, key=med.get)
    print("\n## throughput: tiny_cnn on digits 16x16, AdamW")
    print("| batch | search's samples/s | re-measured median samples/s |")
    print("| --- | --- | --- |")
    for b in sorted(med):
        mark = " (pick)" if b == picked else ""
        mark += " (best)" if b == best else ""
        print(f"| {b}{mark} | {speeds[b]:.0f} | {med[b]:.0f} |")
    print(f"pick {picked}: {100 * med[picked] / med[best]:.1f}% of the best re-measured ({best}); "
          f"search took {cb.metrics['batch_size_search/search_s']:.2f}s, {cb.result.num_trials} candidates")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    p.add_argument("--limit-mb", type=float, default=24.0, help="memory limit of the max_fit comparison")
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    repeats = 3 if args.quick else 5
    max_fit_part(args.limit_mb, repeats)
    throughput_part(repeats, steps=5 if args.quick else 9)


if __name__ == "__main__":
    main()
