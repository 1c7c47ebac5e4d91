"""CostMonitor: dollars as a training metric, with a budget, a run ledger and anomaly alerts."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from mlcost_pl.cost.anomaly import Anomaly, Baseline, baseline, check
from mlcost_pl.cost.catalog import resolve_instance
from mlcost_pl.cost.ledger import Ledger, merge_row, new_run_id, open_ledger
from mlcost_pl.callbacks.spot_checkpoint import find_spot_checkpoint
from mlcost_pl.cost.meter import CostMeter, instances_needed
from mlcost_pl.cost.webhook import post_json, validate_url
from mlcost_pl.preemption.agreement import agreement_for, at_optimizer_boundary, poll
from mlcost_pl.utils.checks import check_choice, check_int, check_number

MARKETS = ("on_demand", "spot")
BUDGET_ON = ("spent", "projected")
# What ``CostMonitor()`` bills this machine at when no price is given (the configs' default for ``custom``).
PLACEHOLDER_USD_PER_HOUR = 0.10


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _batch_size(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor-like leaf (0 when there is none)."""
    if hasattr(batch, "shape") and len(getattr(batch, "shape", ())) > 0:
        return int(batch.shape[0])
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            n = _batch_size(item)
            if n:
                return n
    return 0


class CostMonitor(Callback):
    """Log what training costs in dollars, stop at a budget, record each run in a ledger, alert on anomalies.

    Cost is wall time x the hourly price of the instances the run occupies: the price comes from the bundled catalog
    (``mlcost_pl/cost/prices.yaml``, dated, overridable) and is multiplied by the instance count derived from the
    trainer (``num_nodes`` x ``ceil(devices per node / GPUs per instance)`` on GPUs; one machine per node on CPU).
    Billed time is the whole wall time of ``trainer.fit``, from the ``setup`` hook to the ``teardown`` hook (set-up,
    sanity check, validation, checkpointing and the final save included), summed across resumes: the cumulative totals
    live in the checkpoint (``state_dict``). :meth:`bill_from` moves the start earlier (the recipes bill from process
    start: imports and data loading are paid for too). The final total is logged at ``teardown``, before the loggers
    are finalized.

    Args:
        instance: a catalog instance type (``p4d.24xlarge``, ``g2-standard-4``, ...) or ``custom`` (this machine).
        usd_per_hour: on-demand USD per instance-hour; overrides the catalog. For ``custom`` with no price anywhere,
            the placeholder ``PLACEHOLDER_USD_PER_HOUR`` (0.10) is used, with a message saying so.
        spot_usd_per_hour: spot USD per instance-hour; overrides the catalog's typical spot price.
        market: what the run pays: ``on_demand`` or ``spot``.
        prices: catalog overrides/additions, ``{name: {on_demand, spot, gpus, gpu, cloud, region}}``.
        prices_file: a YAML/JSON file (path or fsspec URL) of catalog overrides in the same shape.
        max_usd: budget; when reached, save a checkpoint and stop (see ``budget_on``). ``None``: no budget.
        budget_on: ``spent`` stops when the dollars spent reach ``max_usd``; ``projected`` also stops as soon as the
            projected total for the whole fit reaches it (after ``min_steps`` steps of evidence).
        ledger: where runs are recorded (a local path -> SQLite, ``*.jsonl`` or a remote fsspec URL -> JSON lines).
            ``None``: no ledger (and no anomaly alerts).
        ledger_storage_options: fsspec options for a remote ledger (credentials, ``client_kwargs``).
        run_name: the name written to the ledger; default: the last folder of ``trainer.default_root_dir``.
        config_hash: what makes runs "similar"; default: a hash of the model/data hyper-parameters, instance,
            market, instance count, precision and planned steps.
        alert_k: alert when ``usd_per_step`` or ``usd_projected`` exceeds ``alert_k`` x the average of similar
            finished runs in the ledger. ``None``: no alerts.
        alert_min_runs: similar runs needed before alerting.
        min_steps: steps of this fit before projections drive alerts or a ``projected`` budget stop.
        webhook_url: an http(s) URL to POST alerts to (JSON with a Slack-style ``text``); ``None``: log only.
        webhook_timeout: seconds before the POST gives up (it never raises).
        clock: monotonic seconds; inject a fake in tests.

    Raises:
        ValueError: an unknown instance (the nearest catalog names are listed), a wrong type or range of any
            argument (``market``, ``budget_on``, ``max_usd``, ``alert_k``, ``min_steps``, ``webhook_url``, ...; named).

    Logged (every ``trainer.log_every_n_steps`` steps; keys are absent, not zero, where unknown):

    =================================  =================================================================
    ``cost/usd_total``                 dollars spent so far, all resumes included
    ``cost/usd_per_step``              dollars per optimizer step over the last logging window
    ``cost/usd_projected``             spent + remaining planned steps x this fit's dollars per step
    ``cost/usd_on_demand_equivalent``  what the same wall time costs on demand
    ``cost/usd_spot_equivalent``       what it costs on spot (absent when no spot price is known)
    ``cost/samples_per_s``             training samples per second, all ranks, last window
    ``cost/checkpoint_s``              seconds the loop was blocked by checkpointing (from SpotCheckpoint)
    ``cost/usd_checkpoint``            their dollar cost
    ``cost/lost_steps``                steps re-done after preemptions (from SpotCheckpoint)
    ``cost/usd_lost_preemption``       their dollar cost
    ``gpu/util_pct``                   GPU utilization (needs nvidia-ml-py), CUDA only
    ``gpu/mem_allocated_gb``           ``torch.cuda.memory_allocated`` in GB (10^9 bytes), CUDA only
    ``gpu/mem_reserved_max_gb``        ``torch.cuda.max_memory_reserved`` in GB (10^9 bytes), CUDA only
    =================================  =================================================================

    Example:
        >>> import lightning as L
        >>> from mlcost_pl.callbacks import CostMonitor
        >>> monitor = CostMonitor("g5.xlarge", market="spot", max_usd=25.0, ledger="outputs/cost_ledger.sqlite")
        >>> trainer = L.Trainer(callbacks=[monitor], max_epochs=1)  # doctest: +SKIP
    """

    def __init__(
        self,
        instance: str = "custom",
        usd_per_hour: float | None = None,
        spot_usd_per_hour: float | None = None,
        market: str = "on_demand",
        prices: Mapping[str, Any] | None = None,
        prices_file: str | None = None,
        max_usd: float | None = None,
        budget_on: str = "spent",
        ledger: str | None = None,
        ledger_storage_options: Mapping[str, Any] | None = None,
        run_name: str | None = None,
        config_hash: str | None = None,
        alert_k: float | None = 2.0,
        alert_min_runs: int = 1,
        min_steps: int = 10,
        webhook_url: str | None = None,
        webhook_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(instance, str) or not instance:
            raise ValueError(f"instance must be a catalog instance name or 'custom', got {instance!r}")
        check_choice("market", market, MARKETS)
        check_choice("budget_on", budget_on, BUDGET_ON)
        check_number("usd_per_hour", usd_per_hour, strict=False, allow_none=True)
        check_number("spot_usd_per_hour", spot_usd_per_hour, strict=False, allow_none=True)
        check_number("max_usd", max_usd, allow_none=True)
        check_number("alert_k", alert_k, allow_none=True)
        check_int("alert_min_runs", alert_min_runs)
        check_int("min_steps", min_steps)
        check_number("webhook_timeout", webhook_timeout)
        if prices is not None and not isinstance(prices, Mapping):
            raise ValueError(f"prices must be a mapping {{instance: {{on_demand, spot, ...}}}} or None, got {prices!r}")
        for arg, value in (("prices_file", prices_file), ("run_name", run_name), ("config_hash", config_hash)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{arg} must be a non-empty string or None, got {value!r}")
        if ledger is not None and (not isinstance(ledger, str) or not ledger.strip()):
            raise ValueError(f"ledger must be a path or fsspec URL, or None; got {ledger!r}")
        if not callable(clock):
            raise ValueError(f"clock must be a callable returning monotonic seconds, got {clock!r}")
        self.price_is_placeholder = False
        try:
            self.price = resolve_instance(instance, usd_per_hour, spot_usd_per_hour, dict(prices) if prices else None, prices_file)
        except ValueError as err:
            if instance != "custom" or usd_per_hour is not None or "has no price" not in str(err):
                raise
            self.price = resolve_instance(instance, PLACEHOLDER_USD_PER_HOUR, spot_usd_per_hour, dict(prices) if prices else None, prices_file)
            self.price_is_placeholder = True
        if market == "spot" and self.price.spot is None:
            raise ValueError(f"market='spot' but instance {instance!r} has no spot price: give spot_usd_per_hour=...")
        self.instance = self.price.name
        self.market = market
        self.max_usd = None if max_usd is None else float(max_usd)
        self.budget_on = budget_on
        self.ledger_url = None if ledger is None else str(ledger)
        self.ledger_storage_options = dict(ledger_storage_options) if ledger_storage_options else None
        self.run_name = run_name
        self.config_hash = config_hash
        self.alert_k = None if alert_k is None else float(alert_k)
        self.alert_min_runs = alert_min_runs
        self.min_steps = min_steps
        self.webhook_url = validate_url(webhook_url)
        self.webhook_timeout = float(webhook_timeout)
        self.clock = clock

        self.run_id = new_run_id()
        self.started_at: str | None = None
        self.num_instances = 1
        self.meter = CostMeter(self._rate("on_demand") if market == "on_demand" else self._rate("spot"), clock=clock)
        self.status = "created"
        self.budget_checkpoint: str | None = None
        self.alerts: list[Anomaly] = []
        self.last_metrics: dict[str, float] = {}
        self._ledger: Ledger | None = None
        self._baseline: Baseline | None = None
        self._hash_given = config_hash is not None
        self._last_step = 0
        self._start_step = 0
        self._planned_steps: float | None = None
        self._stopping = False
        self._gpu_util_ok = True
        self._alerted_before: set[str] = set()
        self._restored_last_step: int | None = None
        self._dry_run = False
        self._bill_from: float | None = None
        self._in_fit = False

    def bill_from(self, start: float) -> None:
        """Bill the next fit from ``start`` (a ``clock()`` reading, e.g. the process start) instead of its ``setup``.

        Used once: a later fit (a resume in the same process) starts at its own ``setup`` again.
        """
        check_number("start", start, minimum=-math.inf, strict=False)
        self._bill_from = float(start)

    # ------------------------------------------------------------------ pure helpers
    def _rate(self, market: str) -> float:
        price = self.price.price(market)
        return 0.0 if price is None else price * self.num_instances

    @property
    @override
    def state_key(self) -> str:
        # Not the instance or market: a run resumed on another instance type or market keeps its totals and run id.
        return "CostMonitor"

    def _spot_figures(self, trainer: pl.Trainer) -> dict[str, float]:
        spot = find_spot_checkpoint(trainer)
        if spot is None:
            return {}
        out = {}
        blocked = getattr(spot, "blocked_seconds_total", None)
        if isinstance(blocked, (int, float)):
            out["cost/checkpoint_s"] = float(blocked)
            out["cost/usd_checkpoint"] = self.meter.usd_for_seconds(float(blocked))
        lost = getattr(spot, "lost_steps_total", None)
        if isinstance(lost, int):
            out["cost/lost_steps"] = float(lost)
            out["cost/usd_lost_preemption"] = self.meter.usd_for_steps(lost)
        return out

    def remaining_steps(self, trainer: pl.Trainer) -> float | None:
        if self._planned_steps is None or not math.isfinite(self._planned_steps):
            return None
        return max(0.0, self._planned_steps - trainer.global_step)

    def projected_usd(self, trainer: pl.Trainer) -> float | None:
        remaining = self.remaining_steps(trainer)
        return None if remaining is None else self.meter.projected_usd(remaining)

    def figures(self, trainer: pl.Trainer) -> dict[str, float]:
        """The cumulative cost figures now (the keys of the table above that do not depend on a window)."""
        m = self.meter
        out = {"cost/usd_total": m.usd_total, "cost/usd_on_demand_equivalent": m.usd_on_demand_total}
        if m.usd_spot_total is not None and self.price.spot is not None:
            out["cost/usd_spot_equivalent"] = m.usd_spot_total
        projected = self.projected_usd(trainer)
        if projected is not None:
            out["cost/usd_projected"] = projected
        out.update(self._spot_figures(trainer))
        return out

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # The first hook of a fit: the instance is paid for from here (or from bill_from) to teardown.
        uses_gpu = type(trainer.accelerator).__name__ == "CUDAAccelerator"
        self.num_instances = instances_needed(int(trainer.num_nodes), int(trainer.num_devices), self.price.gpus, uses_gpu)
        self.meter.usd_per_hour = self._rate(self.market)
        self.meter.on_demand_usd_per_hour = self._rate("on_demand")
        self.meter.spot_usd_per_hour = None if self.price.spot is None else self._rate("spot")
        if self.meter.spot_usd_per_hour is not None and self.meter.usd_spot_total is None:
            self.meter.usd_spot_total = 0.0
        self.meter.start(at=self._bill_from)
        self._bill_from = None
        self._in_fit = True
        self.started_at = self.started_at or _now_iso()
        self.status = "running"
        self._stopping = False
        if self.max_usd is not None:  # every rank decides on its own meter; ranks agree every check_every_n_steps
            agreement_for(trainer).register("cost_monitor", self._over_budget_locally)

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_step = self._start_step = trainer.global_step
        self._dry_run = bool(trainer.fast_dev_run)  # a smoke test: no ledger rows (as Lightning writes no logs)
        if trainer.is_global_zero and self.ledger_url is not None and not self._dry_run:
            self._ledger = open_ledger(self.ledger_url, self.ledger_storage_options)  # bad locations fail here, before any training
        placeholder = " (a placeholder price: pass usd_per_hour=<USD per hour of this machine>)" if self.price_is_placeholder else ""
        rank_zero_info(
            f"CostMonitor: {self.instance} x {self.num_instances} on {self.market} = ${self.meter.usd_per_hour:.4g}/h{placeholder}"
            + (f", budget ${self.max_usd:.4g} ({self.budget_on})" if self.max_usd else "")
        )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The step counter is restored from a checkpoint by now.
        self._last_step = self._start_step = trainer.global_step
        uncounted = trainer.global_step - self._restored_last_step if self._restored_last_step is not None else 0
        if uncounted > 0:  # steps the checkpoint holds but the meter had not ticked when it was saved
            per_step = self.meter.samples_total / self.meter.steps_total if self.meter.steps_total else 0
            self.meter.steps_total += uncounted
            self.meter.samples_total += int(round(per_step * uncounted))
        self._restored_last_step = None
        try:
            self._planned_steps = float(trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - e.g. an iterable dataset of unknown length: no projection
            self._planned_steps = None
        if not self._hash_given:
            self.config_hash = self._hash_config(trainer, pl_module)
        if self._ledger is not None:
            try:
                similar = self._ledger.similar(self.config_hash, exclude_run_id=self.run_id)
                self._baseline = baseline(similar)
                row = self._row(trainer)  # status "running": a killed run still leaves a row
                self._ledger.upsert(merge_row(self._ledger.get(self.run_id), row, trained=False))
            except Exception as err:  # noqa: BLE001 - the ledger must never stop training
                rank_zero_warn(f"CostMonitor: ledger {self.ledger_url} unavailable: {err}")

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        steps = step - self._last_step
        self._last_step = step
        self.meter.tick(steps=steps, samples=_batch_size(batch) * trainer.world_size)
        if steps and trainer._logger_connector.should_update_logs:
            self._log(trainer, pl_module)
        if self.max_usd is not None and not self._stopping and at_optimizer_boundary(trainer):
            self._check_budget(trainer)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Short epochs may never reach a logging step: log the epoch's closing figures too.
        self.meter.tick()
        if self.meter.window_steps:
            self._log(trainer, pl_module, on_step=False)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or not self._in_fit:
            return
        self._finish(trainer, "finished")

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._in_fit:
            self._finish(trainer, "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")

    def _finish(self, trainer: pl.Trainer, status: str) -> None:
        """Stop the meter, log the final totals (before Lightning finalizes the loggers) and write the ledger row."""
        self.meter.stop()
        self._in_fit = False
        if self.status == "running":
            self.status = status
        if trainer.is_global_zero:
            final = self.figures(trainer)
            self.last_metrics = {**self.last_metrics, **final}
            for logger in trainer.loggers:
                try:
                    logger.log_metrics(final, step=trainer.global_step)
                except Exception as err:  # noqa: BLE001 - a logger failing at the end must not hide the run's result
                    rank_zero_warn(f"CostMonitor: could not log the final cost to {type(logger).__name__}: {err}")
        self._write_ledger(trainer)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "meter": self.meter.state_dict(),
            "run_id": self.run_id,
            "started_at": self.started_at,
            "instance": self.instance,
            "market": self.market,
            "alerted": sorted({a.metric for a in self.alerts}),
            # The step the meter has counted up to: a checkpoint saved by another callback's on_train_batch_end before
            # this one ticked holds one step less than its global step; the resume counts it (see on_train_start).
            "last_step": self._last_step,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.meter.load_state_dict(state_dict.get("meter", {}))
        self.run_id = state_dict.get("run_id", self.run_id)
        self.started_at = state_dict.get("started_at", self.started_at)
        self._alerted_before = set(state_dict.get("alerted", []))
        self._restored_last_step = state_dict.get("last_step")
        if self._restored_last_step is not None:
            self._last_step = int(self._restored_last_step)

    # ------------------------------------------------------------------ internals
    def _hash_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        dm = getattr(trainer, "datamodule", None)
        what = {
            "model": type(pl_module).__qualname__,
            "hparams": dict(getattr(pl_module, "hparams", {}) or {}),
            "data": type(dm).__qualname__ if dm is not None else None,
            "data_hparams": dict(getattr(dm, "hparams", {}) or {}) if dm is not None else None,
            "instance": self.instance,
            "market": self.market,
            "num_instances": self.num_instances,
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "planned_steps": self._planned_steps,
        }
        return hashlib.sha1(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def _window_figures(self, trainer: pl.Trainer) -> dict[str, float]:
        window = self.meter.window()
        out = self.figures(trainer)
        if window.usd_per_step is not None:
            out["cost/usd_per_step"] = window.usd_per_step
        if window.samples_per_s is not None:
            out["cost/samples_per_s"] = window.samples_per_s
        return out

    def _gpu_figures(self, pl_module: pl.LightningModule) -> dict[str, float]:
        device = pl_module.device
        if device.type != "cuda":
            return {}
        import torch

        out = {
            "gpu/mem_allocated_gb": torch.cuda.memory_allocated(device) / 1e9,
            "gpu/mem_reserved_max_gb": torch.cuda.max_memory_reserved(device) / 1e9,
        }
        if self._gpu_util_ok:
            try:
                out["gpu/util_pct"] = float(torch.cuda.utilization(device))
            except Exception:  # noqa: BLE001 - needs nvidia-ml-py (pynvml); absent -> key absent
                self._gpu_util_ok = False
        return out

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, on_step: bool = True) -> None:
        metrics = self._window_figures(trainer)
        metrics.update(self._gpu_figures(pl_module))
        self.last_metrics = metrics
        # Straight to the loggers (rank zero), as LearningRateMonitor does: `LightningModule.log` costs ~0.5 ms per
        # key, and under DDP it would ask for a cross-rank reduction of figures that are per-run, not per-rank.
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if trainer.is_global_zero and self.alert_k is not None and self._baseline is not None:
            if trainer.global_step - self._start_step >= self.min_steps:
                current = {"usd_per_step": metrics.get("cost/usd_per_step"), "usd_projected": metrics.get("cost/usd_projected")}
                self._alert(trainer, check(self._baseline, current, self.alert_k, self.alert_min_runs))

    def _alert(self, trainer: pl.Trainer, anomalies: list[Anomaly]) -> None:
        done = {a.metric for a in self.alerts} | self._alerted_before
        for anomaly in anomalies:
            if anomaly.metric in done:
                continue  # once per figure per run
            self.alerts.append(anomaly)
            message = f"{anomaly.message()} [run {self._name(trainer)}, {self.instance}, config {self.config_hash}]"
            rank_zero_warn(f"CostMonitor: {message}")
            if self.webhook_url:
                payload = {"text": message, "run_id": self.run_id, "name": self._name(trainer), "config_hash": self.config_hash,
                           "instance": self.instance, "step": trainer.global_step, **anomaly.as_dict()}
                post_json(self.webhook_url, payload, timeout=self.webhook_timeout)

    def _budget_reason(self, step: int) -> str | None:
        """Why this rank's meter says stop, or ``None``."""
        if self.max_usd is None:
            return None
        if self.meter.usd_total >= self.max_usd:
            return f"spent ${self.meter.usd_total:.4g} >= max_usd ${self.max_usd:.4g}"
        if self.budget_on == "projected" and step - self._start_step >= self.min_steps:
            remaining = None if self._planned_steps is None or not math.isfinite(self._planned_steps) else max(0.0, self._planned_steps - step)
            projected = None if remaining is None else self.meter.projected_usd(remaining)
            if projected is not None and projected >= self.max_usd:
                return f"projected ${projected:.4g} >= max_usd ${self.max_usd:.4g}"
        return None

    def _over_budget_locally(self) -> bool:
        return self._budget_reason(self._last_step) is not None

    def _check_budget(self, trainer: pl.Trainer) -> None:
        if trainer.world_size == 1:
            reason = self._budget_reason(trainer.global_step)
        else:  # no broadcast per step: the shared flag reduce, every check_every_n_steps steps
            agreed = poll(trainer)
            if not (agreed and agreed.get("cost_monitor")):
                return
            reason = self._budget_reason(trainer.global_step) or "the budget was reached on another rank"
        if reason is None:
            return
        self._stopping = True
        self.status = "budget_stop"
        rank_zero_warn(f"CostMonitor: budget reached ({reason}) at step {trainer.global_step}: checkpointing, then stopping")
        spot = find_spot_checkpoint(trainer)
        if spot is not None:
            self.budget_checkpoint = spot.save_now(trainer, reason="budget")
        else:
            self.budget_checkpoint = f"{str(trainer.default_root_dir).rstrip('/')}/budget-stop.ckpt"
            trainer.save_checkpoint(self.budget_checkpoint)
        trainer.should_stop = True
        fit_loop = trainer.fit_loop
        if not fit_loop._can_stop_early:  # a budget outranks min_epochs/min_steps
            fit_loop.min_epochs = 0
            fit_loop.epoch_loop.min_steps = 0

    def _name(self, trainer: pl.Trainer) -> str:
        if self.run_name:
            return self.run_name
        root = str(trainer.default_root_dir).rstrip("/")
        return root.rsplit("/", 1)[-1] or root

    def _row(self, trainer: pl.Trainer) -> dict[str, Any]:
        figures = self.figures(trainer)
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith(("cost/", "gpu/")):
                continue  # the row has its own columns for those
            try:
                metrics[key] = float(value)
            except (TypeError, ValueError):
                continue
        return {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": _now_iso() if self.status not in ("running",) else None,
            "name": self._name(trainer),
            "status": self.status,
            "config_hash": self.config_hash,
            "instance": self.instance,
            "cloud": self.price.cloud,
            "market": self.market,
            "num_instances": self.num_instances,
            "usd_per_hour": self.meter.usd_per_hour,
            "duration_s": self.meter.seconds_total,
            "steps": self.meter.steps_total,
            "samples": self.meter.samples_total,
            "usd_total": self.meter.usd_total,
            "usd_per_step": self.meter.usd_per_step_overall,
            "usd_projected": figures.get("cost/usd_projected"),
            "usd_on_demand_equivalent": figures.get("cost/usd_on_demand_equivalent"),
            "usd_spot_equivalent": figures.get("cost/usd_spot_equivalent"),
            "usd_lost_preemption": figures.get("cost/usd_lost_preemption"),
            "checkpoint_s": figures.get("cost/checkpoint_s"),
            "metrics": metrics,
        }

    def _write_ledger(self, trainer: pl.Trainer) -> None:
        if not trainer.is_global_zero or self.ledger_url is None or self._dry_run:
            return
        try:
            ledger = self._ledger or open_ledger(self.ledger_url, self.ledger_storage_options)
            row = self._row(trainer)
            ledger.upsert(merge_row(ledger.get(self.run_id), row, trained=trainer.global_step > self._start_step))
        except Exception as err:  # noqa: BLE001 - the run's result matters more than its ledger row
            rank_zero_warn(f"CostMonitor: could not write the ledger {self.ledger_url}: {err}")
