"""Step time with every mlcost_pl callback of ``configs/callbacks/default.yaml`` on vs bare Lightning, same model.

``uv run python -m bench.callback_overhead [--quick] [--saves default] [--ddp]``

``--saves default`` keeps the default config's save settings (``every_n_steps: 200``, ``every_seconds: 600``,
async, a save at fit end, inside the timed window) instead of pushing saves past the run; ``--ddp`` runs both arms as
2 forked gloo processes on CPU (``strategy="ddp_fork"``) and reports rank 0 (the step time includes the DDP gradient
all-reduce in both arms; what differs is the callbacks' own collectives).

The callbacks are composed through Hydra from ``configs/callbacks/default.yaml`` (so callbacks other features add to
the default group are covered automatically) and only those from ``mlcost_pl`` are kept. Checkpoint writes' own I/O is
excluded by pointing save intervals beyond the run (``every_n_steps``/``every_seconds`` -> past the end, no save at fit
end); the ledger is written at fit start/end, outside the timed steps. Both arms log to a CSVLogger every
``log_every_n_steps`` (10) steps. Step time = wall time from the start of step ``warmup`` to the end of training,
divided by the steps in between; arms alternate (interleaved) for several repeats; medians and the ratio are printed.
Because the wall-time ratio is noisy on a shared machine, the time spent inside the mlcost_pl callbacks' hooks over the
same steps is also measured directly (every overridden ``on_*`` hook wrapped with a timer) and printed as a fraction of
the bare step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
# Checkpoint-writing knobs pushed beyond the run, so checkpoint I/O does not count as callback overhead.
NO_SAVES = {"every_n_steps": 10**9, "every_seconds": None, "save_on_fit_end": False, "every_n_train_steps": 10**9}


class StepTimer(Callback):
    """Wall time from the start of step ``warmup`` to the end of training (runs after every other callback), and
    the time spent inside the other callbacks' hooks over the same steps (``hook_s``, filled by :func:`time_hooks`)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.t0, self.t1, self.steps = warmup, None, None, 0
        self.hook_total = 0.0
        self.hook_at_t0 = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            self.t0, self.step0, self.hook_at_t0 = time.perf_counter(), trainer.global_step, self.hook_total

    def on_train_end(self, trainer, pl_module):
        self.t1, self.steps = time.perf_counter(), trainer.global_step - self.step0
        self.hook_s = self.hook_total - self.hook_at_t0
        if getattr(self, "out", None):  # forked DDP ranks report through a file
            Path(self.out, f"timer-rank{trainer.global_rank}.json").write_text(json.dumps([self.step_s, self.hook_s / self.steps]))

    @property
    def step_s(self) -> float:
        return (self.t1 - self.t0) / self.steps


def time_hooks(callbacks: list[Callback], timer: StepTimer) -> None:
    """Wrap every hook the callbacks override so the time spent inside them adds to ``timer.hook_total``."""
    for cb in callbacks:
        for name in dir(Callback):
            if not name.startswith("on_") or getattr(type(cb), name) is getattr(Callback, name):
                continue

            def wrapped(*args, _fn=getattr(cb, name), **kwargs):
                start = time.perf_counter()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    timer.hook_total += time.perf_counter() - start

            setattr(cb, name, wrapped)


def mlcost_callbacks(tmp: str, saves: str = "none") -> tuple[list[Callback], list[str]]:
    """Instantiate the mlcost_pl callbacks of ``configs/callbacks/default.yaml``, saves pushed past the run unless
    ``saves="default"``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from mlcost_pl.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["callbacks=default"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.log_dir = f"{tmp}/outputs"
        cfg.hydra.runtime.output_dir = f"{tmp}/run"
    HydraConfig.instance().set_config(cfg)
    out, skipped = [], []
    for name, node in cfg.callbacks.items():
        if node is None or not str(node.get("_target_", "")).startswith("mlcost_pl."):
            skipped.append(name)
            continue
        with open_dict(node):
            for key, value in NO_SAVES.items():
                if key in node and saves == "none":
                    node[key] = value
        out.append(instantiate(node))
    return out, skipped


def run_once(arm: str, backbone: str, image_size: int, steps: int, warmup: int, dm: Any, tmp: str, saves: str = "none",
             ddp: bool = False) -> tuple[float, float]:
    from mlcost_pl.models import ImageClassifier

    L.seed_everything(0, verbose=False)
    model = ImageClassifier(backbone, num_classes=dm.num_classes, in_channels=1)
    run_dir = tempfile.mkdtemp(dir=tmp)
    callbacks = mlcost_callbacks(run_dir, saves)[0] if arm == "mlcost" else []
    timer = StepTimer(warmup)
    timer.out = run_dir if ddp else None
    time_hooks(callbacks, timer)
    trainer = L.Trainer(
        accelerator="cpu", devices=2 if ddp else 1, strategy="ddp_fork" if ddp else "auto", max_steps=steps,
        limit_val_batches=0, log_every_n_steps=10, callbacks=[*callbacks, timer], logger=CSVLogger(run_dir, name=f"{arm}"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir,
    )
    trainer.fit(model, datamodule=dm)
    if ddp:
        step_s, hook_s = json.loads(Path(run_dir, "timer-rank0.json").read_text())
        return step_s, hook_s
    return timer.step_s, timer.hook_s / timer.steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--saves", choices=("none", "default"), default="none",
                        help="none: save intervals past the run (hook cost only); default: the default config's saves")
    parser.add_argument("--ddp", action="store_true", help="2 forked gloo processes per arm (report rank 0)")
    args = parser.parse_args()
    from mlcost_pl.data import DigitsDataModule

    torch.set_num_threads(2)
    repeats = 3 if args.quick else 5
    # tiny_cnn is the worst case (the shortest steps); the full run adds the default recipe's ResNet-18.
    cases = [("tiny_cnn", 16, 60)] if args.quick else [("tiny_cnn", 16, 150), ("resnet18", 32, 60)]
    warmup = 5
    with tempfile.TemporaryDirectory() as tmp:
        names = [type(c).__name__ for c in mlcost_callbacks(tempfile.mkdtemp(dir=tmp), args.saves)[0]]
        print(f"mlcost_pl callbacks from configs/callbacks/default.yaml: {', '.join(names) or 'none'}; "
              f"saves: {args.saves}; {'DDP 2 x gloo (ddp_fork), rank 0' if args.ddp else '1 process'}")
        print(f"{'model':<10} {'steps':>5} {'bare ms/step':>13} {'mlcost ms/step':>15} {'ratio':>7} {'in-hook ms/step':>16} {'in-hook/bare':>13}"
              f"  (medians of {repeats} interleaved repeats)")
        for backbone, size, steps in cases:
            dm = DigitsDataModule(image_size=size, batch_size=64)
            times: dict[str, list[float]] = {"bare": [], "mlcost": []}
            hooks: list[float] = []
            for r in range(repeats):
                order = ("bare", "mlcost") if r % 2 == 0 else ("mlcost", "bare")
                for arm in order:
                    step_s, hook_s = run_once(arm, backbone, size, steps, warmup, dm, tmp, args.saves, args.ddp)
                    times[arm].append(step_s)
                    if arm == "mlcost":
                        hooks.append(hook_s)
            bare, ours, hook = statistics.median(times["bare"]), statistics.median(times["mlcost"]), statistics.median(hooks)
            print(f"{backbone:<10} {steps - warmup:>5} {bare * 1e3:>13.2f} {ours * 1e3:>15.2f} {ours / bare:>7.3f} {hook * 1e3:>16.3f}"
                  f" {hook / bare:>12.2%}", flush=True)
            print(f"           all bare: {[round(t * 1e3, 2) for t in times['bare']]}  all mlcost: {[round(t * 1e3, 2) for t in times['mlcost']]}")


if __name__ == "__main__":
    main()
