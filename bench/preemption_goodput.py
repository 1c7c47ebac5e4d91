"""Goodput under preemptions: ``uv run python -m bench.preemption_goodput [--quick]``.

The same training run (a tiny MLP on the bundled digits, 40 steps per epoch; ``run_one(make=...)`` takes any
``(LightningModule, DataModule)`` factory, which ``recipes.savings`` uses for the configured model) under the same
seeded schedule of preemptions. Each attempt runs in a forked child process (Lightning is imported once, in the parent); after a seeded
number of executed steps the parent sends the child a real SIGTERM (the notice) and, if it has not exited within the
grace period (``--grace``, seconds), a SIGKILL (the machine goes away). Attempts are restarted until the run ends:

(a) ours: SpotCheckpoint(every_n_steps=N) + PreemptionHandler, Lightning's own ModelCheckpoint off
    (``enable_checkpointing=False``): the notice makes an emergency checkpoint at the current step, the attempt exits
    with code 75 and the next one resumes mid-epoch exactly;
(b) Lightning's ModelCheckpoint every epoch (``save_last=True``), restarted with ``ckpt_path="last"``;
(c) Lightning's ModelCheckpoint every N steps (``every_n_train_steps=N``, ``save_last=True``, the same N as (a)),
    restarted with ``ckpt_path="last"``. Lightning's SIGTERM handling stops (b) and (c) after the current step.

Goodput = useful steps (the run's final global step) / executed steps (every training step of every attempt, counted
by the child after each step, so steps of a SIGKILLed attempt count). Repeats interleave the arms with a different
schedule each; medians are printed.
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
from collections.abc import Callable
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


def tiny_job() -> tuple[L.LightningModule, L.LightningDataModule]:
    """The bench's job: TinyMLP on 8x8 digits, batch 32 (``STEPS_PER_EPOCH`` steps per epoch)."""
    return TinyMLP(), DigitsDataModule(image_size=8, batch_size=32)


class Progress(Callback):
    """Writes the number of steps this attempt executed to ``path`` after every step (read by the parent)."""

    def __init__(self, path: Path) -> None:
        self.path, self.executed = path, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.executed += 1
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.executed))
        os.replace(tmp, self.path)


Job = Callable[[], tuple[L.LightningModule, L.LightningDataModule]]


def _trainer(epochs: int, callbacks: list, checkpointing: bool, steps_per_epoch: int | None) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False,
                     limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu", devices=1, enable_checkpointing=checkpointing,
                     limit_train_batches=steps_per_epoch)


def _attempt(method: str, epochs: int, every_n: int, attempt: int, workdir: Path, make: Job,
             steps_per_epoch: int | None) -> int:
    """One attempt, in the forked child: train (resuming), return the exit code."""
    # One intra-op thread: GNU OpenMP's pool does not survive fork(), so a child of a parent that already ran a
    # parallel torch op (the configured data's set-up, an earlier savings row) would wait forever on its first one.
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    progress = Progress(workdir / "executed")
    model, dm = make()
    if method == "ours":
        callbacks = [progress, SpotCheckpoint(str(workdir / "spot"), every_n_steps=every_n),
                     PreemptionHandler(signals=["SIGTERM"], check_every_n_steps=1, grace_seconds=30)]
        trainer, ckpt_path = _trainer(epochs, callbacks, False, steps_per_epoch), None
    else:
        every = {"every_n_epochs": 1} if method == "mc_epoch" else {"every_n_train_steps": every_n}
        mc = ModelCheckpoint(dirpath=str(workdir / "mc"), save_last=True, **every)
        trainer = _trainer(epochs, [progress, mc], True, steps_per_epoch)
        ckpt_path = "last" if attempt else None
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    except SystemExit as exit_:  # PreemptedExit (75) for ours, Lightning's SIGTERMException for the baselines
        return exit_.code if isinstance(exit_, PreemptedExit) else 128 + signal.SIGTERM
    (workdir / "global_step").write_text(str(trainer.global_step))
    return 0


def _executed(path: Path) -> int:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return 0


def run_one(method: str, epochs: int, every_n: int, gaps: list[int], grace_s: float, workdir: Path, make: Job = tiny_job,
            steps_per_epoch: int | None = None) -> dict[str, float]:
    """Train ``make()``'s model and data to the end under the preemption schedule ``gaps`` (executed steps between
    notices); ``steps_per_epoch`` caps each epoch (``limit_train_batches``). Returns useful and executed steps,
    preemptions, SIGKILLs and wall seconds."""
    executed, preemptions, killed, attempt = 0, 0, 0, 0
    start = time.perf_counter()
    while True:
        (workdir / "executed").unlink(missing_ok=True)
        after = gaps[attempt] if attempt < len(gaps) else None
        pid = os.fork()
        if pid == 0:  # the attempt
            code = 1
            try:
                code = _attempt(method, epochs, every_n, attempt, workdir, make, steps_per_epoch)
            finally:
                os._exit(code)
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif after is not None and _executed(workdir / "executed") >= after:
                os.kill(pid, signal.SIGTERM)  # the notice; the grace period starts now
                deadline = time.monotonic() + grace_s
                while status is None and time.monotonic() < deadline:
                    done, raw = os.waitpid(pid, os.WNOHANG)
                    status = raw if done else None
                    time.sleep(0.002)
                if status is None:  # past the grace: the machine is gone
                    os.kill(pid, signal.SIGKILL)
                    status = os.waitpid(pid, 0)[1]
                    killed += 1
            else:
                time.sleep(0.002)
        code = os.waitstatus_to_exitcode(status)
        executed += _executed(workdir / "executed")
        attempt += 1
        if code == 0:
            return {"useful": float((workdir / "global_step").read_text()), "executed": float(executed),
                    "preemptions": float(preemptions), "sigkills": float(killed), "wall_s": time.perf_counter() - start}
        assert is_preemption(code), f"{method}: attempt {attempt} failed with exit code {code}"
        preemptions += 1
        if attempt > 200:
            raise RuntimeError(f"{method}: no progress after {attempt} attempts")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 repeats x 4 epochs instead of 3 x 8")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every-n-steps", type=int, default=20, help="checkpoint interval N of (a) and (c)")
    p.add_argument("--grace", type=float, default=2.0, help="seconds from SIGTERM to SIGKILL")
    a = p.parse_args(argv)
    repeats = a.repeats or (2 if a.quick else 3)
    epochs = a.epochs or (4 if a.quick else 8)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    methods = ("ours", "mc_steps", "mc_epoch")
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for r in range(repeats):
        rng = random.Random(a.seed + r)
        # Steps of work between preemptions: 0.5 to 2 epochs (a preemption every ~50 s of a real 1 step/s job).
        gaps = [rng.randint(STEPS_PER_EPOCH // 2, 2 * STEPS_PER_EPOCH) for _ in range(200)]
        for method in (methods if r % 2 == 0 else methods[::-1]):
            workdir = Path(tempfile.mkdtemp(prefix=f"goodput-{method}-"))
            try:
                row = run_one(method, epochs, a.every_n_steps, gaps, a.grace, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            row["goodput"] = row["useful"] / row["executed"]
            rows[method].append(row)
            print(f"repeat {r} {method:8s}: useful {row['useful']:.0f} / executed {row['executed']:.0f} steps = "
                  f"{row['goodput']:.3f} ({row['preemptions']:.0f} preemptions, {row['sigkills']:.0f} SIGKILLed, "
                  f"{row['wall_s']:.1f} s)", flush=True)
    med = {m: {k: statistics.median(x[k] for x in v) for k in v[0]} for m, v in rows.items()}
    print(f"\nmedians over {repeats} repeats, {epochs} epochs x {STEPS_PER_EPOCH} steps, same preemption schedule, "
          f"grace {a.grace:g} s then SIGKILL, N = {a.every_n_steps} steps:")
    print(f"{'method':52s} {'useful':>7s} {'executed':>9s} {'goodput':>8s} {'preempt.':>8s} {'SIGKILL':>7s} {'wall s':>7s}")
    names = {"ours": "(a) SpotCheckpoint(every N) + PreemptionHandler",
             "mc_steps": "(c) ModelCheckpoint every N steps + ckpt_path=last",
             "mc_epoch": "(b) ModelCheckpoint/epoch + ckpt_path=last"}
    for m in methods:
        x = med[m]
        print(f"{names[m]:52s} {x['useful']:7.0f} {x['executed']:9.0f} {x['goodput']:8.3f} {x['preemptions']:8.1f} "
              f"{x['sigkills']:7.1f} {x['wall_s']:7.1f}")
    for m in ("mc_steps", "mc_epoch"):
        print(f"goodput ratio ours/{m}: {med['ours']['goodput'] / med[m]['goodput']:.3f}")
    print(f"goal ours >= 0.99: {'met' if med['ours']['goodput'] >= 0.99 else 'NOT met'}")


if __name__ == "__main__":
    main()
