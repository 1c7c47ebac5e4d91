"""Train an image classifier: ``uv run python -m recipes.train [overrides]``.

Reads top to bottom: check the run's identity, seed, data, model, callbacks, loggers, trainer, fit, test, summary.
Hydra composes and validates the config before Lightning and torch are imported (a typo is reported in seconds).
"""

from __future__ import annotations

import time
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from mlcost_pl.config import register_resolvers
from mlcost_pl.cost.meter import process_start
from mlcost_pl.distributed.launcher import requeue_on_preemption
from mlcost_pl.errors import UserInputError
from recipes._cli import run_cli

register_resolvers()

# Where the next CostMonitor starts billing: the process start (imports and data loading are paid for too), then the
# end of the previous train() call in this process (recipes.finetune trains twice).
_unbilled_since: float | None = None


def check_identity(cfg: DictConfig) -> None:
    """Refuse to resume a run folder whose checkpoints were trained with another config; apply ``extend_to_epochs``.

    Skipped without a resuming SpotCheckpoint, with an explicit ``ckpt_path``, and under ``fast_dev_run``.
    """
    from mlcost_pl.runs import check_run_identity

    extend = cfg.get("extend_to_epochs")
    if extend is not None:
        if not isinstance(extend, int) or isinstance(extend, bool) or extend < 1:
            raise UserInputError(f"extend_to_epochs must be a positive integer, got {extend!r}")
        with open_dict(cfg):
            cfg.trainer.max_epochs = extend
    spot = next((cb for cb in (cfg.get("callbacks") or {}).values()
                 if cb is not None and str(cb.get("_target_", "")).endswith("SpotCheckpoint")), None)
    if spot is None or not spot.get("resume", True) or cfg.get("ckpt_path") or cfg.trainer.get("fast_dev_run"):
        if extend is not None:
            raise UserInputError("extend_to_epochs=N resumes the run from its SpotCheckpoint folder: it needs the "
                             "spot_checkpoint callback with resume=true and no ckpt_path")
        return
    config = OmegaConf.to_container(cfg, resolve=False)
    if extend is not None:
        config["trainer"]["max_epochs"] = extend
    check_run_identity(str(spot.dirpath), config, run_name=str(cfg.get("run_name", "")), extend_to_epochs=extend,
                       storage_options=spot.get("storage_options"))


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Fit then test the configured model; return ``(metrics, objects)``."""
    from mlcost_pl.utils.threads import torch_threads

    with torch_threads(cfg.get("torch_threads")):  # experiment=digits_fast: 1 (a second thread only adds contention)
        return _fit_and_test(cfg)


def _fit_and_test(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    check_identity(cfg)

    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.utilities import rank_zero_info

    from mlcost_pl.callbacks.attempt_steps import AttemptSteps
    from mlcost_pl.callbacks.cost_monitor import CostMonitor
    from mlcost_pl.callbacks.extend_schedule import ExtendSchedule
    from mlcost_pl.callbacks.store_config import StoreConfig
    from mlcost_pl.config import instantiate_group
    from mlcost_pl.distributed.launcher import export_launcher_env
    from mlcost_pl.precision import resolve_precision
    from mlcost_pl.summary import cost_summary_rows, print_summary, record_final_metrics
    from recipes._cli import one_line_per_log_message

    one_line_per_log_message()
    export_launcher_env()  # inside a submitit job: its world (RANK, WORLD_SIZE, ...) for Lightning and trainer=ddp_multinode
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    # Every checkpoint carries the resolved training config, so recipes.export can rebuild model and data from it.
    stores = [cb for cb in callbacks if isinstance(cb, StoreConfig)]
    if not stores:
        stores = [StoreConfig()]
        callbacks.append(stores[0])
    for cb in stores:
        cb.set_config(cfg)
    if cfg.get("extend_to_epochs") is not None:
        callbacks.append(ExtendSchedule(int(cfg.extend_to_epochs)))
    attempt = AttemptSteps()  # what this command trained, as opposed to the run's totals after a resume
    callbacks.append(attempt)
    global _unbilled_since
    bill_start = _unbilled_since if _unbilled_since is not None else process_start()
    for cb in callbacks:
        if isinstance(cb, CostMonitor) and bill_start is not None:
            cb.bill_from(bill_start)
    loggers = instantiate_group(cfg.get("logger"), "logger")
    precision, reason = resolve_precision(cfg.trainer.get("precision", "32-true"), accelerator=cfg.trainer.get("accelerator", "auto"))
    if reason != "set explicitly":
        rank_zero_info(f"trainer.precision=auto -> {precision}: {reason}")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=precision)

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_s = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for cb in trainer.callbacks:  # CostMonitor logs straight to the loggers: its run totals join the returned metrics
        if isinstance(cb, CostMonitor):
            metrics.update(cb.figures(trainer))

    if cfg.get("test"):
        for row in trainer.test(model, datamodule=datamodule, verbose=False):
            metrics.update({k: float(v) for k, v in row.items()})

    batch = getattr(datamodule, "batch_size", 0)
    steps = attempt.steps(trainer)
    samples = steps * batch * trainer.accumulate_grad_batches * trainer.world_size
    train_s = attempt.train_seconds()
    metrics.update({"time/fit_s": fit_s, "time/wall_s": time.perf_counter() - start, "time/train_s": train_s})
    metrics["throughput/train_samples_per_s"] = samples / train_s if steps and train_s > 0 else 0.0
    metrics.update(getattr(datamodule, "stats", None) or {})  # data=streaming: bytes as fed vs stored

    if trainer.is_global_zero:
        log_dirs = sorted({lg.log_dir for lg in trainer.loggers if getattr(lg, "log_dir", None)})
        ckpt_dirs = sorted({str(cb.dirpath) for cb in trainer.callbacks if getattr(cb, "dirpath", None)})
        rows: list[tuple[str, object]] = [
            ("model", f"{cfg.model.backbone} ({sum(p.numel() for p in model.parameters()):,} parameters)"),
            ("data", f"{type(datamodule).__name__}, {datamodule.num_classes} classes"),
            ("epochs / steps", f"{trainer.current_epoch} / {trainer.global_step}"
                               + (f" (this command: {steps} steps from step {attempt.start_step})" if attempt.start_step else "")),
            ("test accuracy", metrics.get("test/acc", float("nan"))),
            ("wall time (s), this command", metrics["time/wall_s"]),
            ("train samples/s", metrics["throughput/train_samples_per_s"] if steps
             else "- (nothing left to train: the run had reached max_epochs; extend_to_epochs=N trains it longer)"),
            *(datamodule.summary_rows() if hasattr(datamodule, "summary_rows") else []),
            ("checkpoints", ", ".join(ckpt_dirs) or "none"),
            ("logs", ", ".join(log_dirs) or "none"),
        ]
        print_summary("mlcost_pl train", rows)
        record_final_metrics(trainer, metrics)  # test metrics join the run's ledger row (CostMonitor)
        cost_rows = cost_summary_rows(trainer)
        if cost_rows:
            print_summary("mlcost_pl cost", cost_rows)
    _unbilled_since = time.monotonic()
    return metrics, {"trainer": trainer, "model": model, "datamodule": datamodule, "cfg": cfg}


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns test accuracy (for sweepers)."""
    with requeue_on_preemption():  # a SLURM job preempted after its emergency checkpoint requeues itself
        metrics, _ = run_cli(train, cfg)
    return metrics.get("test/acc")


if __name__ == "__main__":
    main()
