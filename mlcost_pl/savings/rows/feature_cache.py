"""The feature_cache row: recompute avoided by FreezeBackbone(cache_features=<feature store>) on a frozen backbone.

Three arms over the same epochs of the configured model and data with the backbone frozen (interleaved per repeat):
``none`` (no cache: the backbone runs on every sample of every epoch), ``cold`` (a fine-tune that fills an empty
:class:`~mlcost_pl.data.FeatureStore` as it goes) and ``warm`` (a second fine-tune on the store the cold run filled).
The saving is cold vs none: what one fine-tune gains by caching; the warm figure (a repeat fine-tune, a sweep) is in
the conditions. Backbone samples computed are counted by a forward hook on the backbone's first layer, which runs
only when the backbone really computes.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.savings.report import MEASURED, Row
from mlcost_pl.savings.rows.common import RunContext, quietly, rerun

ARMS = ("none", "cold", "warm")


def first_layer(module: Any) -> Any:
    """The first leaf submodule of ``module`` (what every computed sample goes through first)."""
    for sub in module.modules():
        if not list(sub.children()):
            return sub
    return module


def _arm(ctx: RunContext, epochs: int, cache: bool | str) -> dict[str, float]:
    """One fine-tune with the backbone frozen; fit seconds, backbone samples computed, final val accuracy."""
    import lightning as L
    from hydra.utils import instantiate

    from mlcost_pl.callbacks import FreezeBackbone

    cfg = ctx.cfg
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    computed = [0]
    hook = first_layer(model.backbone).register_forward_hook(lambda m, args, out: computed.__setitem__(0, computed[0] + len(args[0])))
    freeze = FreezeBackbone("backbone", unfreeze_at=None, cache_features=cache)
    trainer = ctx.trainer(callbacks=[freeze], max_epochs=epochs, max_steps=-1)
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        hook.remove()
    out = {"seconds": time.perf_counter() - start, "computed": float(computed[0]),
           "acc": float(trainer.callback_metrics.get("val/acc", float("nan")))}
    if isinstance(cache, str):
        out["store_misses"] = float(trainer.callback_metrics["feature_store/misses"])
    return out


@quietly
def measure(ctx: RunContext) -> Row:
    """Fit seconds and backbone samples computed over the same epochs, frozen backbone, no cache vs a feature store
    filled as it goes (cold) vs filled by the cold run (warm); saving = 1 - cold seconds / no-cache seconds."""
    cfg = ctx.cfg
    quick = bool(cfg.savings.quick)
    epochs = cfg.savings.get("feature_cache_epochs") or (3 if quick else 5)
    if not isinstance(epochs, int) or epochs < 2:
        raise UserInputError(f"savings.feature_cache_epochs must be an integer >= 2 (a cache pays from the second "
                             f"epoch), got {epochs!r}")
    repeats = 1 if quick else 3
    runs: dict[str, list[dict[str, float]]] = {a: [] for a in ARMS}
    for rep in range(repeats):
        store = str(ctx.tmp / f"feature-store-{rep}")
        for arm in ARMS if rep % 2 == 0 else ("cold", "warm", "none"):  # warm always after the cold run that fills it
            runs[arm].append(_arm(ctx, epochs, False if arm == "none" else store))
    med = {a: {k: statistics.median(r[k] for r in runs[a]) for k in runs[a][0]} for a in ARMS}
    none, cold, warm = med["none"], med["cold"], med["warm"]
    saving = 1.0 - cold["seconds"] / none["seconds"]
    note = (f"{epochs} epochs with the backbone frozen: cached (cold feature store) {cold['seconds']:.1f} s, "
            f"{cold['computed']:,.0f} backbone samples computed vs no cache {none['seconds']:.1f} s, "
            f"{none['computed']:,.0f} computed; a repeat fine-tune on the warm store {warm['seconds']:.1f} s "
            f"({100 * (1 - warm['seconds'] / none['seconds']):.0f}% saved), {warm['computed']:,.0f} computed; val acc "
            f"cold/none/warm {cold['acc']:.3f} / {none['acc']:.3f} / {warm['acc']:.3f} (the cache changes no result); "
            f"train + val samples, {cfg.model.backbone} "
            f"(configured weights), {cfg.data._target_.rsplit('.', 1)[-1]}, FreezeBackbone(cache_features=<local "
            f"store>), {repeats} interleaved repeat(s), fit wall time")
    figures = {"epochs": epochs, "repeats": repeats, "median": med, "runs": runs,
               "warm_saving": 1.0 - warm["seconds"] / none["seconds"]}
    return Row("feature_cache", saving, MEASURED, note, rerun("feature_cache"), figures)
