"""The transfer row: time to a target validation accuracy, cached frozen fine-tune vs training from scratch.

The configured network is pretrained on the first half of the configured classes (not counted: it stands for the
pretrained model one downloads), then two arms train on the other half, interleaved: ``cached`` loads that backbone
and trains the head on cached frozen features (:class:`~mlcost_pl.callbacks.FreezeBackbone`, never unfrozen), and
``scratch`` trains the same network from random weights. Both stop at the first validation (every half epoch,
counted in both) that reaches ``savings.transfer_target`` (``bench.transfer_savings.TimeToTarget``).
"""

from __future__ import annotations

import inspect
import statistics
import time
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import FAILED, MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun

ARMS = ("cached", "scratch")


def split_classes(cfg: Any) -> tuple[list[int], list[int]]:
    """``(pretrain classes, fine-tune classes)``: the configured classes (``data.classes``, or all) cut in two halves.

    Raises:
        ValueError: the data module has no ``classes`` option, or fewer than 4 classes to split.
    """
    from hydra.utils import get_class, instantiate

    target = get_class(cfg.data._target_)
    if "classes" not in inspect.signature(target).parameters:
        raise UserInputError(f"data: {cfg.data._target_} has no `classes` option, which the transfer row needs to "
                             "pretrain on half the classes and fine-tune on the other half (DigitsDataModule has it)")
    classes = list(cfg.data.classes) if cfg.data.get("classes") else list(range(instantiate(cfg.data).num_classes))
    if len(classes) < 4:
        raise UserInputError(f"data.classes: the transfer row needs >= 4 classes to split in two halves, got {classes}")
    half = len(classes) // 2
    return classes[:half], classes[half:]


def optimizer_override(lr: Any) -> dict[str, Any]:
    """``model`` keyword overrides for ``savings.transfer_lr``: AdamW at that lr without a scheduler (the bench's
    setting), or nothing (``None``: the configured optimizer and scheduler).

    Raises:
        ValueError: a learning rate that is not a positive number.
    """
    if lr is None:
        return {}
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise UserInputError(f"savings.transfer_lr must be a learning rate > 0 or null (the configured optimizer), got {lr!r}")
    return {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": float(lr), "weight_decay": 0.01},
            "scheduler": None}


def _fit(cfg: Any, ctx: RunContext, classes: list[int], epochs: int, callbacks: list[Any], weights_path: str | None,
         val: bool) -> tuple[Any, Any, float]:
    """Fit the configured model on ``classes``; ``(model, trainer, seconds from train start to the end)``."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, classes=classes, num_classes=None)
    model = instantiate(cfg.model, num_classes=len(classes), weights=None, weights_path=weights_path,
                        **optimizer_override(cfg.savings.get("transfer_lr")))
    extra: dict[str, Any] = {"val_check_interval": 0.5} if val else {"limit_val_batches": 0}
    trainer = ctx.trainer(callbacks=callbacks, max_epochs=epochs, max_steps=-1, **extra)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    return model, trainer, time.perf_counter() - start


@quietly
def measure(ctx: RunContext) -> Row:
    """Pretrain on half the classes (not counted), then time to ``savings.transfer_target`` val accuracy on the other
    half: cached frozen fine-tune vs scratch, interleaved; saving = 1 - cached seconds / scratch seconds."""
    cfg = ctx.cfg
    import lightning as L

    from bench.transfer_savings import TimeToTarget
    from mlcost_pl.callbacks import FreezeBackbone
    from mlcost_pl.finetune.weights import save_weights

    target = cfg.savings.get("transfer_target", 0.85)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise UserInputError(f"savings.transfer_target must be a validation accuracy in (0, 1], got {target!r}")
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise UserInputError(f"trainer.max_epochs must be >= 1 for the transfer row (its bound), got {epochs!r}")
    pre, task = split_classes(cfg)
    lr = cfg.savings.get("transfer_lr")
    optimizer_override(lr)  # a bad value fails before pretraining
    quick = bool(cfg.savings.quick)
    pre_epochs, repeats = epochs, (1 if quick else 3)

    L.seed_everything(int(cfg.seed), verbose=False)
    pretrained, _, pre_s = _fit(cfg, ctx, pre, pre_epochs, [], None, val=False)
    weights = str(ctx.tmp / "transfer_backbone.pt")
    save_weights(pretrained.backbone, weights)

    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in ARMS}
    for rep in range(repeats):
        for arm in ARMS if rep % 2 == 0 else ARMS[::-1]:
            L.seed_everything(int(cfg.seed) + rep, verbose=False)
            ttt = TimeToTarget(float(target))
            callbacks: list[Any] = [ttt]
            if arm == "cached":
                callbacks.append(FreezeBackbone("backbone", unfreeze_at=None, cache_features=True))
            _, _, run_s = _fit(cfg, ctx, task, epochs, callbacks, weights if arm == "cached" else None, val=True)
            runs[arm].append({"seconds": ttt.seconds, "run_s": run_s, "epochs": ttt.epochs, "best": ttt.best})

    def median(arm: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[arm])

    reached = {a: all(r["seconds"] is not None for r in runs[a]) for a in ARMS}
    best = {a: max(r["best"] for r in runs[a]) for a in ARMS}
    setup = (f"{cfg.model.backbone} pretrained on classes {pre} for {pre_epochs} epochs ({pre_s:.1f} s, NOT counted), "
             f"then fine-tuned on classes {task}; cached = FreezeBackbone(cache_features=True), backbone never "
             f"unfrozen; scratch = the same network from random weights; val every 0.5 epoch (counted in both), up to "
             f"{epochs} epochs (trainer.max_epochs), "
             f"{'configured optimizer/scheduler' if lr is None else f'AdamW lr {lr:g}, no scheduler (savings.transfer_lr)'}"
             f", {repeats} interleaved repeat(s)")
    figures: dict[str, Any] = {"target": float(target), "lr": lr, "pretrain_classes": pre, "task_classes": task,
                               "pretrain_epochs": pre_epochs, "pretrain_s": pre_s, "max_epochs": epochs, "runs": runs}

    def arm_text(a: str) -> str:
        if reached[a]:
            return f"{a} {median(a, 'seconds'):.1f} s ({median(a, 'epochs'):.1f} epochs)"
        return f"{a} never reached it within {epochs} epochs (best {best[a]:.3f}, ran {median(a, 'run_s'):.1f} s)"

    reach = f"time to val/acc >= {target}: {arm_text('cached')} vs {arm_text('scratch')}"
    if not reached["cached"]:
        figures["winner"] = "scratch" if reached["scratch"] else None
        return Row("transfer", None, FAILED, f"failed: {reach}; {setup}", rerun("transfer"), figures)
    cached_s = median("cached", "seconds")
    if reached["scratch"]:
        scratch_s, bound = median("scratch", "seconds"), ""
    else:  # scratch ran all its epochs without reaching it: its run time is a lower bound of its time to target
        scratch_s, bound = median("scratch", "run_s"), " (a lower bound: scratch's whole run stands for its time)"
    saving = 1.0 - cached_s / scratch_s
    figures.update({"cached_s": cached_s, "scratch_s": scratch_s, "winner": "cached" if saving > 0 else "scratch"})
    note = f"{reach}: {figures['winner']} won, cached at {100 * cached_s / scratch_s:.0f}% of scratch{bound}; {setup}"
    return Row("transfer", saving, MEASURED, note, rerun("transfer"), figures)
