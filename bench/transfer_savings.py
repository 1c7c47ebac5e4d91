"""Time to reach a target accuracy on digits 5-9: fine-tuning a backbone pretrained on digits 0-4 vs training from
scratch vs fine-tuning on cached backbone features.

    uv run python -m bench.transfer_savings [--quick]

One process, three arms interleaved per repeat (same seed within a repeat), medians and ratios at the end:

- ``scratch``: the same network, random init, everything trainable;
- ``finetune``: backbone weights from the 0-4 model, :class:`~mlcost_pl.callbacks.FreezeBackbone` keeps it frozen
  for ``--unfreeze-at`` epochs (head only), then unfreezes it with ``lr x --lr-mult``;
- ``cached``: as ``finetune`` plus ``cache_features=True`` (frozen epochs train the head on cached features).

The clock runs from the start of training (after set-up, no sanity check) until the validation accuracy (checked
every ``--val-every`` epoch) first reaches ``--target``; validation time is counted in every arm. Pretraining on 0-4 happens once, before the
arms, and is reported separately: it stands for the "pretrained model" one downloads.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from mlcost_pl.callbacks import FreezeBackbone
from mlcost_pl.data import DigitsDataModule
from mlcost_pl.models import ImageClassifier

PRETRAIN_CLASSES = [0, 1, 2, 3, 4]
TASK_CLASSES = [5, 6, 7, 8, 9]


class TimeToTarget(Callback):
    """Stop at the first validation whose ``val/acc`` reaches ``target``; record the time it took."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.start = 0.0
        self.seconds: float | None = None
        self.epochs = 0
        self.best = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        acc = float(trainer.callback_metrics.get("val/acc", 0.0))
        self.best = max(self.best, acc)
        self.epochs = trainer.global_step / max(1, trainer.num_training_batches)
        if self.seconds is None and acc >= self.target:
            self.seconds = time.perf_counter() - self.start
            trainer.should_stop = True


def _trainer(max_epochs: int, callbacks: list[Callback], val_every: float = 1.0) -> L.Trainer:
    return L.Trainer(
        val_check_interval=val_every,
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )


def _model(args: argparse.Namespace, weights_path: str | None = None) -> ImageClassifier:
    return ImageClassifier(
        args.backbone,
        num_classes=len(TASK_CLASSES),
        in_channels=1,
        weights_path=weights_path,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.01),
    )


def pretrain(args: argparse.Namespace, path: Path) -> tuple[float, float]:
    """Train on digits 0-4 and save the backbone's state_dict to ``path``; return (seconds, val accuracy)."""
    L.seed_everything(1234, verbose=False)
    dm = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, classes=PRETRAIN_CLASSES)
    model = ImageClassifier(
        args.backbone,
        num_classes=len(PRETRAIN_CLASSES),
        in_channels=1,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.01),
    )
    start = time.perf_counter()
    trainer = _trainer(args.pretrain_epochs, [])
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start
    torch.save(model.backbone.state_dict(), path)
    return seconds, float(trainer.callback_metrics.get("val/acc", float("nan")))


def run_arm(arm: str, args: argparse.Namespace, seed: int, weights: str) -> dict[str, Any]:
    L.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(image_size=args.image_size, batch_size=args.batch_size, classes=TASK_CLASSES)
    ttt = TimeToTarget(args.target)
    callbacks: list[Callback] = [ttt]
    if arm == "scratch":
        model = _model(args)
    else:
        model = _model(args, weights_path=weights)
        callbacks.append(
            FreezeBackbone(
                "backbone",
                unfreeze_at=args.unfreeze_at,
                lr_multipliers=args.lr_mult,
                cache_features=arm == "cached",
            )
        )
    _trainer(args.max_epochs, callbacks, args.val_every).fit(model, datamodule=dm)
    return {"seconds": ttt.seconds, "epochs": ttt.epochs, "best": ttt.best}


def _median(values: list[float | None]) -> float:
    done = [v for v in values if v is not None]
    return statistics.median(done) if len(done) == len(values) and done else float("inf")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 3")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--target", type=float, default=0.85, help="validation accuracy to reach on digits 5-9")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--unfreeze-at", type=int, default=1000, help="epoch at which the backbone is unfrozen (default: never within the run, i.e. train the head on frozen features)")
    parser.add_argument("--lr-mult", type=float, default=1.0)
    parser.add_argument("--val-every", type=float, default=0.5, help="validate every this fraction of an epoch")
    parser.add_argument("--arms", default="finetune,scratch,cached")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 3)
    arms = args.arms.split(",")
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        import logging

        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    with tempfile.TemporaryDirectory() as tmp:
        weights = str(Path(tmp) / "backbone_0-4.pt")
        pre_s, pre_acc = pretrain(args, Path(weights))
        print(f"pretrain on digits 0-4: {pre_s:.1f} s, {args.pretrain_epochs} epochs, val acc {pre_acc:.3f} (not counted)", flush=True)
        results: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
        for rep in range(repeats):
            for arm in arms:
                r = run_arm(arm, args, seed=rep, weights=weights)
                results[arm].append(r)
                sec = f"{r['seconds']:.1f} s" if r["seconds"] is not None else "not reached"
                print(f"  repeat {rep} {arm:9s} {sec:>12s}  epochs {r['epochs']:5.2f}  best val acc {r['best']:.3f}", flush=True)

    med = {a: _median([r["seconds"] for r in results[a]]) for a in arms}
    print(
        f"\n{args.backbone} {args.image_size}x{args.image_size}, AdamW lr {args.lr}, batch {args.batch_size}, "
        f"target val acc {args.target} (checked every {args.val_every} epoch), unfreeze_at {args.unfreeze_at} "
        f"(lr x{args.lr_mult}), {repeats} repeats"
    )
    print(f"{'arm':10s} {'median s':>9s} {'epochs':>7s} {'vs scratch':>10s}")
    for a in arms:
        ep = statistics.median(r["epochs"] for r in results[a])
        ratio = med[a] / med["scratch"] if "scratch" in med and med["scratch"] not in (0, float("inf")) else float("nan")
        print(f"{a:10s} {med[a]:9.1f} {ep:7.1f} {ratio:10.1%}")
    if "cached" in med and "finetune" in med and med["cached"] > 0:
        print(f"cached-feature speedup over finetune: {med['finetune'] / med['cached']:.2f}x")
    return {"pretrain_s": pre_s, "median_s": med, "results": results}


if __name__ == "__main__":
    main()
