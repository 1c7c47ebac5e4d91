"""The spot row: catalog spot/on-demand price x measured goodput under seeded preemptions."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quiet


def measure(ctx: RunContext) -> Row:
    """Catalog spot/on-demand price x measured goodput (bench.preemption_goodput's run, seeded SIGTERM schedule)."""
    import random

    from bench.preemption_goodput import STEPS_PER_EPOCH, run_one

    cfg, price = ctx.cfg, ctx.price
    quiet()
    if price.spot is None:
        raise UserInputError(f"savings.instance={price.name!r} has no spot price in the catalog")
    epochs, every_n, grace_s = (2 if cfg.savings.quick else 4), 20, 2.0
    rng = random.Random(int(cfg.seed))
    gaps = [rng.randint(STEPS_PER_EPOCH // 2, 2 * STEPS_PER_EPOCH) for _ in range(200)]
    goodput = {}
    for method in ("ours", "mc_steps", "mc_epoch"):
        work = Path(tempfile.mkdtemp(prefix=f"savings-spot-{method}-"))
        try:
            with contextlib.chdir(work):  # nothing the attempts write lands in the caller's folder
                r = run_one(method, epochs, every_n, gaps, grace_s, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        goodput[method] = r["useful"] / r["executed"]
    ratio = price.spot / price.on_demand
    saving = 1.0 - ratio / goodput["ours"]
    others = ", ".join(f"{name}: goodput {goodput[m]:.3f}, saving {100 * (1 - ratio / goodput[m]):.1f}%"
                       for m, name in (("mc_steps", f"ModelCheckpoint every {every_n} steps"), ("mc_epoch", "per-epoch ModelCheckpoint")))
    note = (f"{price.name} spot ${price.spot}/h vs on-demand ${price.on_demand}/h (catalog) / goodput "
            f"{goodput['ours']:.3f} with SpotCheckpoint(every {every_n} steps)+PreemptionHandler ({others}); "
            f"{epochs} epochs of bench.preemption_goodput's tiny MLP on digits, not your model: the goodput reflects that "
            f"MLP's step time and checkpoint size, yours lose more per restart when a step or a save takes longer; "
            f"seeded SIGTERMs every 0.5-2 epochs, SIGKILL {grace_s:g} s after each")
    return Row("spot", saving, MEASURED, note, "uv run python -m bench.preemption_goodput --quick",
               {"spot_usd_per_h": price.spot, "on_demand_usd_per_h": price.on_demand, "goodput": goodput})
