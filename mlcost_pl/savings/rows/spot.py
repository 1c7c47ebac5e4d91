"""The spot row: catalog spot/on-demand price x measured goodput under seeded preemptions."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun


@quietly
def measure(ctx: RunContext) -> Row:
    """Catalog spot/on-demand price / measured goodput of the configured model and data under a seeded schedule of real
    SIGTERMs, each followed by a SIGKILL after the grace period (``bench.preemption_goodput.run_one``), for
    SpotCheckpoint + PreemptionHandler and for Lightning's ModelCheckpoint every N steps and every epoch."""
    import random

    from hydra.utils import instantiate

    from bench.preemption_goodput import run_one

    cfg, price = ctx.cfg, ctx.price
    if price.spot is None:
        raise UserInputError(f"savings.instance={price.name!r} has no spot price in the catalog")

    def job() -> tuple[Any, Any]:
        datamodule = instantiate(cfg.data)
        return instantiate(cfg.model, num_classes=datamodule.num_classes), datamodule

    probe = instantiate(cfg.data)
    probe.setup("fit")
    full_epoch = len(probe.train_dataloader())
    steps_per_epoch = min(full_epoch, 40 if cfg.savings.quick else 100)  # bounded: limit_train_batches
    epochs, grace_s = (2 if cfg.savings.quick else 4), 2.0
    every_n = max(1, steps_per_epoch // 2)
    rng = random.Random(int(cfg.seed))
    gaps = [rng.randint(max(1, steps_per_epoch // 2), 2 * steps_per_epoch) for _ in range(200)]
    goodput, runs = {}, {}
    for method in ("ours", "mc_steps", "mc_epoch"):
        work = Path(tempfile.mkdtemp(prefix=f"savings-spot-{method}-", dir=ctx.tmp))
        try:
            with contextlib.chdir(work):  # nothing the attempts write lands in the caller's folder
                runs[method] = run_one(method, epochs, every_n, gaps, grace_s, work, make=job,
                                       steps_per_epoch=steps_per_epoch)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        goodput[method] = runs[method]["useful"] / runs[method]["executed"]
    ratio = price.spot / price.on_demand
    saving = 1.0 - ratio / goodput["ours"]
    others = ", ".join(f"{name}: goodput {goodput[m]:.3f}, saving {100 * (1 - ratio / goodput[m]):.1f}%"
                       for m, name in (("mc_steps", f"ModelCheckpoint every {every_n} steps"),
                                       ("mc_epoch", "per-epoch ModelCheckpoint")))
    r = runs["ours"]
    note = (f"{price.name} spot ${price.spot}/h vs on-demand ${price.on_demand}/h (catalog) / goodput "
            f"{goodput['ours']:.3f} with SpotCheckpoint(every {every_n} steps)+PreemptionHandler ({others}); "
            f"{cfg.model.backbone} on {cfg.data._target_.rsplit('.', 1)[-1]}, {epochs} epochs x {steps_per_epoch} steps "
            f"(of {full_epoch} per full epoch), CPU, {r['preemptions']:.0f} seeded SIGTERMs every 0.5-2 epochs of work, "
            f"SIGKILL {grace_s:g} s after each ({r['sigkills']:.0f} needed for ours); goodput = useful / executed steps, "
            f"so a save that outlives the grace or a restart that replays work lowers it")
    return Row("spot", saving, MEASURED, note, rerun("spot"),
               {"spot_usd_per_h": price.spot, "on_demand_usd_per_h": price.on_demand, "goodput": goodput,
                "runs": runs, "steps_per_epoch": steps_per_epoch, "every_n_steps": every_n})
