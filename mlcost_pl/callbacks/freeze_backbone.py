"""FreezeBackbone: fine-tune from a pretrained backbone with the backbone really frozen, then unfreeze on a schedule."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from typing_extensions import override

from mlcost_pl.data.feature_store import FeatureStore
from mlcost_pl.finetune.feature_cache import FeatureCache
from mlcost_pl.finetune.freezing import count_parameters, freeze, resolve_modules, set_eval, split_groups, unfreeze
from mlcost_pl.finetune.optim import add_param_group
from mlcost_pl.finetune.schedule import UnfreezeSchedule


class FreezeBackbone(Callback):
    """Freeze modules of the LightningModule (default: its ``backbone``) and unfreeze them by epoch or step.

    What it fixes over Lightning's ``BackboneFinetuning``:

    - frozen BatchNorm is truly frozen: the frozen modules run in eval mode, so running statistics stay unchanged
      (re-applied before every training batch, whatever called ``model.train()``);
    - unfrozen parameters are matched to the optimizer by identity, never by value, so a parameter that equals one
      already in the optimizer is still trained;
    - the LR schedulers are extended with each new param group, so the unfrozen layers follow the same schedule
      (scaled by their multiplier) instead of keeping a constant LR;
    - after a resume, groups unfrozen before the checkpoint are unfrozen again and added to the optimizer before its
      state is restored; groups not due yet stay frozen;
    - unfreezing by epoch or by optimizer step, all at once or gradually in ``groups`` from the head down, each
      group with its own LR multiplier;
    - DDP: DDP only syncs gradients of parameters that required grad when the model was wrapped, so once a group is
      unfrozen its gradients are all-reduced here (one flat ``all_reduce`` per optimizer step, before clipping).

    Optional cached-feature fast path (``cache_features=True``): while every group is frozen, each frozen module's
    output is memoized per input sample (a BLAKE2b digest of the sample's bytes), so with a deterministic training
    transform the backbone runs once per distinct image and later epochs train the head on cached features. The cache
    is dropped at the first unfreeze. If fewer than half of the samples hit the cache in an epoch after the first
    (a random transform), the cache is switched off with a warning.

    Args:
        modules: attribute names (``"backbone"``, ``"backbone.layer4"``) or globs over ``named_modules()`` names.
        unfreeze_at: epoch (or step) at which the first group is unfrozen; ``None`` keeps them frozen throughout.
        unfreeze_interval: ``"epoch"`` or ``"step"`` (optimizer steps, ``trainer.global_step``).
        groups: number of layer groups unfrozen one after the other, from the head down (1 = all at once).
        unfreeze_every: epochs (or steps) between two groups.
        lr_multipliers: LR of each unfrozen group relative to the optimizer's first param group (the head): one
            float for all, or one per group.
        train_bn: keep normalization layers inside frozen modules trainable and in train mode (Lightning's default
            behaviour); ``False`` freezes them for real.
        cache_features: ``True``: the in-memory cached-feature fast path (requires ``train_bn=False``); a local path
            or fsspec URL (``"s3://bucket/features"``): the same, persisted in a :class:`mlcost_pl.data.FeatureStore`
            keyed by the frozen weights (BatchNorm buffers included), layer, mode, autocast dtype and torch version, so
            another run or project fine-tuning the same backbone skips the backbone pass from its first epoch.
        cache_max_bytes: memory cap of the in-memory feature cache (``cache_features=True``).
        cache_storage_options: fsspec options of the feature store URL.

    Raises:
        ValueError: a bad argument (named in the message); at ``fit`` time, a pattern in ``modules`` that matches
            no submodule or more ``groups`` than the frozen modules have blocks.

    Logged metrics (per training epoch, ``on_epoch``):

    ========================================  ===================================================================
    ``finetune/trainable_params``             parameters that currently require grad
    ``finetune/total_params``                 all parameters
    ``finetune/frozen_groups``                groups still frozen
    ``finetune/epoch_s``                      wall time of this training epoch (its validation included)
    ``finetune/epoch_s_frozen``               mean epoch time over the epochs run with every group frozen
    ``finetune/epoch_s_unfrozen``             mean epoch time over the epochs run with a group unfrozen
    ``finetune/cache_hit_rate``               share of backbone samples served from the cache (``cache_features``)
    ``finetune/cache_mb``                     memory held by the cache, MiB (``cache_features``)
    ``feature_store/hits``                    samples served from the feature store so far (``cache_features=<url>``)
    ``feature_store/misses``                  samples computed (and stored) so far
    ``feature_store/compute_s_saved``         backbone seconds avoided so far (hits x measured seconds per sample)
    ``feature_store/usd_saved``               the same in dollars at CostMonitor's hourly price (with a CostMonitor)
    ========================================  ===================================================================

    Example:
        >>> import lightning as L
        >>> from mlcost_pl.data import DigitsDataModule
        >>> from mlcost_pl.models import ImageClassifier
        >>> cb = FreezeBackbone("backbone", unfreeze_at=2, groups=2, lr_multipliers=[0.1, 0.01])
        >>> model = ImageClassifier("tiny_cnn", num_classes=10, in_channels=1)
        >>> trainer = L.Trainer(max_epochs=4, callbacks=[cb], logger=False, enable_checkpointing=False,
        ...                     enable_progress_bar=False, limit_train_batches=2, limit_val_batches=1)
        >>> trainer.fit(model, datamodule=DigitsDataModule(image_size=16))  # doctest: +SKIP
    """

    def __init__(
        self,
        modules: str | Sequence[str] = "backbone",
        unfreeze_at: int | None = None,
        unfreeze_interval: str = "epoch",
        groups: int = 1,
        unfreeze_every: int = 1,
        lr_multipliers: float | Sequence[float] = 0.1,
        train_bn: bool = False,
        cache_features: bool | str = False,
        cache_max_bytes: int = 2 << 30,
        cache_storage_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(modules, str):
            modules = [modules]
        modules = [str(m) for m in modules] if modules is not None else []
        if not modules or any(not m for m in modules):
            raise ValueError(f"modules must be a non-empty attribute name/glob or list of them, got {modules!r}")
        if not isinstance(lr_multipliers, (int, float)):
            lr_multipliers = [float(m) for m in lr_multipliers]
        self.schedule = UnfreezeSchedule(
            at=unfreeze_at, interval=unfreeze_interval, every=unfreeze_every, groups=groups, lr_multipliers=lr_multipliers
        )
        if cache_features and train_bn:
            raise ValueError("cache_features=True needs train_bn=False: a backbone whose BatchNorm trains is not frozen")
        if cache_max_bytes < 1:
            raise ValueError(f"cache_max_bytes must be >= 1, got {cache_max_bytes}")
        self.modules = modules
        self.train_bn = train_bn
        if isinstance(cache_features, str) and not cache_features.strip():
            raise ValueError("cache_features must be True/False or a local path / fsspec URL of a feature store, got ''")
        self.cache_features = cache_features
        self.cache: FeatureCache | FeatureStore | None = None
        if isinstance(cache_features, str):  # persistent: served across runs and projects (mlcost_pl.data.FeatureStore)
            self.cache = FeatureStore(cache_features, cache_storage_options)
        elif cache_features:
            self.cache = FeatureCache(cache_max_bytes)
        # Resume state: groups unfrozen so far (in order) and cumulative epoch timings.
        self.unfrozen: list[int] = []
        self.timing = {"frozen_epochs": 0, "frozen_s": 0.0, "unfrozen_epochs": 0, "unfrozen_s": 0.0}
        self._groups: list[dict[str, nn.Module]] = []
        self._resolved: dict[str, nn.Module] = {}
        self._patched: list[nn.Module] = []
        self._sync: list[nn.Parameter] = []
        self._ddp = False
        self._epoch_start: float | None = None
        self._cache_epochs = 0

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(modules=self.modules)

    # ---- set-up ---------------------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._resolved = resolve_modules(pl_module, self.modules)
        self._groups = split_groups(self._resolved, self.schedule.groups)
        # Freeze everything before configure_optimizers runs; on_fit_start re-opens the groups already unfrozen
        # (by a previous fit or a restored checkpoint), after the optimizer exists and before its state is loaded.
        freeze(self._resolved.values(), train_bn=self.train_bn)
        if isinstance(self.cache, FeatureStore) and trainer.is_global_zero:
            self.cache.check_writable()  # a cache URL without write access fails now, in one line
        self._ddp = trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
        strategy = type(trainer.strategy).__name__
        if trainer.world_size > 1 and "DDP" not in strategy:
            rank_zero_warn(f"FreezeBackbone: unfreezing under {strategy} is not verified; DDP is (see the docstring)")

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for group in list(self.unfrozen):
            self._unfreeze_group(trainer, pl_module, group, announce=False)
        if self.cache is not None and not self.unfrozen:
            self._patch()
        trainable, total = count_parameters(pl_module)
        rank_zero_info(
            f"FreezeBackbone: {len(self._groups) - len(self.unfrozen)}/{len(self._groups)} groups frozen, "
            f"{trainable:,} of {total:,} parameters trainable"
        )

    # ---- schedule -------------------------------------------------------------------------------------------------
    def _apply_schedule(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for group in self.schedule.due(trainer.current_epoch, trainer.global_step, self.unfrozen):
            self._unfreeze_group(trainer, pl_module, group)
            self.unfrozen.append(group)

    def _unfreeze_group(self, trainer: Trainer, pl_module: LightningModule, group: int, announce: bool = True) -> None:
        self._unpatch()
        modules = list(self._groups[group].values())
        unfreeze(modules, training=pl_module.training)
        params = [p for m in modules for p in m.parameters()]
        mult = self.schedule.multiplier(group)
        for optimizer in trainer.optimizers:
            scheds = [c.scheduler for c in trainer.lr_scheduler_configs if getattr(c.scheduler, "optimizer", None) is optimizer]
            add_param_group(optimizer, params, lr_multiplier=mult, schedulers=scheds)
        if self._ddp:
            ids = {id(p) for p in self._sync}
            self._sync.extend(p for p in params if id(p) not in ids)
        if announce:
            trainable, total = count_parameters(pl_module)
            rank_zero_info(
                f"FreezeBackbone: unfroze group {group} ({', '.join(self._groups[group]) or 'all'}) at epoch "
                f"{trainer.current_epoch}, step {trainer.global_step}, lr x{mult:g}; {trainable:,} of {total:,} trainable"
            )

    def _frozen_modules(self) -> list[nn.Module]:
        return [m for g, mods in enumerate(self._groups) if g not in self.unfrozen for m in mods.values()]

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.schedule.interval == "epoch":
            self._apply_schedule(trainer, pl_module)
        if self.cache is not None:
            self.cache.reset_counters()
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._epoch_start = time.perf_counter()

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.schedule.interval == "step":
            self._apply_schedule(trainer, pl_module)
        set_eval(self._frozen_modules(), train_bn=self.train_bn)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if not self._sync:
            return
        grads = [p.grad for p in self._sync if p.grad is not None]
        if not grads:
            return
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        flat = _flatten_dense_tensors(grads)
        torch.distributed.all_reduce(flat)
        flat /= trainer.world_size
        for g, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_start is None:
            return
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_start = None
        phase = "unfrozen" if self.unfrozen else "frozen"
        self.timing[f"{phase}_epochs"] += 1
        self.timing[f"{phase}_s"] += seconds
        trainable, total = count_parameters(pl_module)
        metrics = {
            "finetune/trainable_params": float(trainable),
            "finetune/total_params": float(total),
            "finetune/frozen_groups": float(len(self._groups) - len(self.unfrozen)),
            "finetune/epoch_s": seconds,
        }
        for p in ("frozen", "unfrozen"):
            if self.timing[f"{p}_epochs"]:
                metrics[f"finetune/epoch_s_{p}"] = self.timing[f"{p}_s"] / self.timing[f"{p}_epochs"]
        if isinstance(self.cache, FeatureStore):
            self.cache.flush()
            metrics.update(self._store_metrics(trainer, self.cache))
        if self.cache is not None and self._patched:
            metrics["finetune/cache_hit_rate"] = self.cache.hit_rate
            metrics["finetune/cache_mb"] = self.cache.nbytes / 2**20
            self._cache_epochs += 1
            if self._cache_epochs >= 2 and self.cache.hit_rate < 0.5:
                rank_zero_warn(
                    f"FreezeBackbone: only {self.cache.hit_rate:.0%} of samples hit the feature cache this epoch: the "
                    "training transform is not deterministic (or cache_max_bytes is too small); cache switched off"
                )
                self._unpatch()
        for key, value in metrics.items():
            pl_module.log(key, value, on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._unpatch()
            self._sync = []

    # ---- feature cache --------------------------------------------------------------------------------------------
    @staticmethod
    def _store_metrics(trainer: Trainer, store: FeatureStore) -> dict[str, float]:
        metrics = {"feature_store/hits": float(store.total_hits), "feature_store/misses": float(store.total_misses),
                   "feature_store/compute_s_saved": store.saved_s}
        rates = [cb.meter.usd_per_hour for cb in trainer.callbacks if hasattr(getattr(cb, "meter", None), "usd_per_hour")]
        if rates:
            metrics["feature_store/usd_saved"] = store.saved_s / 3600 * rates[0]
        return metrics

    def _patch(self) -> None:
        assert self.cache is not None
        for name, module in self._resolved.items():
            original = module.forward
            cache = self.cache.bind(module, name) if isinstance(self.cache, FeatureStore) else self.cache

            def cached(x: torch.Tensor, *args: Any, _fn: Any = original, _cache: Any = cache, **kwargs: Any) -> torch.Tensor:
                if args or kwargs or torch.is_grad_enabled() and x.requires_grad:
                    return _fn(x, *args, **kwargs)
                return _cache(_fn, x)

            module.forward = cached  # type: ignore[method-assign]
            self._patched.append(module)

    def _unpatch(self) -> None:
        for module in self._patched:
            module.__dict__.pop("forward", None)
        self._patched = []
        if self.cache is not None:
            self.cache.clear()

    # ---- resume ---------------------------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": list(self.unfrozen), "timing": dict(self.timing)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unfrozen = [int(g) for g in state_dict.get("unfrozen", [])]
        if any(g >= self.schedule.groups for g in unfrozen):
            raise ValueError(f"checkpoint has FreezeBackbone groups {unfrozen} unfrozen but groups={self.schedule.groups}")
        self.unfrozen = unfrozen
        self.timing.update(state_dict.get("timing", {}))
