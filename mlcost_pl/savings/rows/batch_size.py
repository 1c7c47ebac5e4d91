"""The batch_size row: BatchSizeSearch's throughput pick vs the configured batch, re-measured side by side."""

from __future__ import annotations

import statistics
from typing import Any

from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun


def first_candidate(configured: int) -> int:
    """Where the search starts: half the configured batch when it is even, so the candidates ``start * 2**k`` include
    the configured batch and one smaller.

    Example:
        >>> first_candidate(64), first_candidate(33)
        (32, 33)
    """
    return configured // 2 if configured % 2 == 0 else configured


def _side_by_side(search: Any, configured: int, repeats: int, steps: int) -> Any:
    """A callback placed after ``search``: at fit start, re-measures samples/s at the configured and the chosen batch
    with the search's own :class:`~mlcost_pl.rightsizing.probe.StepProbe`, in interleaved rounds (``.speeds``)."""
    import lightning as L

    from mlcost_pl.rightsizing.probe import StepProbe, probing

    class SideBySide(L.Callback):
        def __init__(self) -> None:
            self.speeds: dict[int, list[float]] = {}

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            chosen = search.result.batch_size
            arms = [configured] if chosen == configured else [configured, chosen]
            self.speeds = {b: [] for b in arms}
            sample = trainer.strategy.batch_to_device(next(iter(trainer.fit_loop._data_source.dataloader())))
            with probing(trainer, pl_module) as snapshot:
                probe = StepProbe(trainer, pl_module, sample, snapshot, warmup_steps=1, measure_steps=steps)
                for r in range(repeats):
                    for b in arms if r % 2 == 0 else arms[::-1]:
                        sps = probe.samples_per_s(b)
                        if sps is None:
                            raise RuntimeError(f"batch {b} ran out of memory when re-measured after the search")
                        self.speeds[b].append(sps)

    return SideBySide()


@quietly
def measure(ctx: RunContext) -> Row:
    """BatchSizeSearch(mode="throughput") on the configured model/data, then the pick and the configured batch
    re-measured in interleaved rounds; saving = 1 - seconds per sample at the pick / at the configured batch."""
    cfg = ctx.cfg
    import lightning as L
    from hydra.utils import instantiate

    from mlcost_pl.callbacks import BatchSizeSearch
    from mlcost_pl.errors import UserInputError

    configured = cfg.data.get("batch_size")
    if not isinstance(configured, int) or configured < 1:
        raise UserInputError(f"data.batch_size must be a positive integer for the batch_size row, got {configured!r}")
    quick = bool(cfg.savings.quick)
    cap, bound = cfg.savings.get("batch_size_max"), "savings.batch_size_max"
    if cap is None and quick:
        cap, bound = 4 * configured, "4x the configured batch, quick"  # trials at large batches are the search's cost
    if cap is not None and (not isinstance(cap, int) or cap < configured):
        raise UserInputError(f"savings.batch_size_max must be an integer >= data.batch_size={configured}, got {cap!r}")
    repeats, steps = (3, 2) if quick else (5, 5)
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    search = BatchSizeSearch(mode="throughput", init_batch_size=first_candidate(configured),
                             max_batch_size=cap, keep_global_batch=False,
                             use_cache=False, max_search_share=None, measure_steps=steps)
    side = _side_by_side(search, configured, repeats, steps)
    trainer = ctx.trainer(callbacks=[search, side], max_steps=0, max_epochs=-1, limit_val_batches=0)
    trainer.fit(model, datamodule=datamodule)

    result, chosen = search.result, search.result.batch_size
    speeds = {b: statistics.median(v) for b, v in side.speeds.items()}
    saving = 1.0 - (1.0 / speeds[chosen]) / (1.0 / speeds[configured])
    tried = ", ".join(f"{b}: {v:.0f}" for b, v in sorted(result.samples_per_s.items()))
    if chosen == configured:
        head = f"the configured batch {configured} is already the throughput pick ({speeds[configured]:.0f} samples/s)"
        saving = 0.0
    else:
        head = (f"batch {chosen} (the pick) {speeds[chosen]:.0f} vs configured {configured} {speeds[configured]:.0f} "
                f"samples/s, re-measured in {repeats} interleaved rounds x {steps} steps (medians)")
    bound = "the training set size" if cap is None else f"{cap} ({bound})"
    note = (f"{head}; search samples/s by batch {{{tried}}}, largest tried {bound} (stopped: {result.stopped}); training step (forward, "
            f"backward, optimizer) on a batch tiled from real {cfg.data._target_.rsplit('.', 1)[-1]} samples, data "
            f"loading excluded, {cfg.model.backbone}, precision {cfg.trainer.get('precision')}; saving = samples/s at the "
            f"same number of epochs; convergence per epoch at a larger batch (lr scaling) is NOT measured")
    figures = {"configured": configured, "chosen": chosen, "samples_per_s": speeds, "per_round": side.speeds,
               "search_samples_per_s": dict(result.samples_per_s), "search_s": result.search_s,
               "stopped": result.stopped, "batch_size_max": cap, "rounds": repeats, "steps": steps}
    return Row("batch_size", saving, MEASURED, note, rerun("batch_size"), figures)
