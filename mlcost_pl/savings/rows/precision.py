"""The precision row: step time and peak memory at precision=auto vs 32-true on the configured model."""

from __future__ import annotations

import statistics

from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun, step_timer


def step_time(ctx: RunContext, precision: str, steps: int, warmup: int = 2) -> tuple[float, float | None]:
    """Median step seconds and peak CUDA memory (GiB, None on CPU) of the configured model/data at ``precision``."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    cfg = ctx.cfg
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    timer = step_timer(warmup)
    trainer = ctx.trainer(callbacks=[timer], precision=precision, max_steps=steps + warmup, max_epochs=-1,
                          limit_val_batches=0)
    cuda = torch.cuda.is_available() and trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(model, datamodule=datamodule)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return statistics.median(timer.times), peak


@quietly
def measure(ctx: RunContext) -> Row:
    """Step time (and peak CUDA memory) at precision=auto vs 32-true, interleaved, on the configured model/data."""
    from mlcost_pl.precision import resolve_precision

    cfg = ctx.cfg
    auto, reason = resolve_precision("auto", accelerator=str(cfg.trainer.get("accelerator", "auto")))
    command = rerun("precision")
    if auto == "32-true":
        return Row("precision", 0.0, MEASURED, f"precision=auto keeps 32-true here ({reason}): no change, no saving", command)
    steps = int(cfg.savings.steps or (10 if cfg.savings.quick else 30))
    times: dict[str, list[float]] = {"32-true": [], auto: []}
    peaks: dict[str, float | None] = {}
    for repeat in range(2):
        for p in (("32-true", auto) if repeat % 2 == 0 else (auto, "32-true")):
            t, peaks[p] = step_time(ctx, p, steps)
            times[p].append(t)
    fp32, mixed = statistics.median(times["32-true"]), statistics.median(times[auto])
    mem = (f"; peak memory {peaks[auto]:.2f} vs {peaks['32-true']:.2f} GiB" if peaks[auto] is not None else
           "; peak memory not measured on CPU")
    note = (f"median step {1e3 * mixed:.1f} ms at {auto} vs {1e3 * fp32:.1f} ms at 32-true ({reason}); {steps} steps x 2 "
            f"interleaved repeats, {cfg.model.backbone}, batch {cfg.data.get('batch_size')}{mem}")
    return Row("precision", 1.0 - mixed / fp32, MEASURED, note, command,
               {"step_s": {"32-true": fp32, auto: mixed}, "peak_gib": peaks})
