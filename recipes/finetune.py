"""Transfer learning: ``uv run python -m recipes.finetune experiment=finetune [overrides]``.

Reads top to bottom: (1) pretrain the configured network on ``finetune.pretrain_classes`` (digits 0-4) with
``recipes.train.train`` and save its backbone to ``finetune.backbone_path`` (path or fsspec URL); (2) fine-tune on
``data.classes`` (digits 5-9) from those weights with ``FreezeBackbone`` (``callbacks.freeze_backbone``). Phase 1 is
skipped with ``finetune.pretrain=false`` (the weights file must exist) or ``model.weights=DEFAULT`` (torchvision
weights are the pretrained model).
"""

from __future__ import annotations

import copy
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import MissingInputError, UserInputError
from mlcost_pl.summary import print_summary
from mlcost_pl.utils.fs import exists
from recipes._cli import run_cli
from recipes.train import train

register_resolvers()


def finetune(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Pretrain (unless skipped), save the backbone, fine-tune; return the fine-tune ``(metrics, objects)``."""
    ft = cfg.get("finetune")
    if ft is None:
        raise UserInputError("recipes.finetune needs the `finetune:` config section: run it with experiment=finetune")
    path = str(ft.backbone_path)
    metrics_pre: dict[str, float] = {}

    if cfg.model.get("weights") is None and ft.pretrain:
        pre = copy.deepcopy(cfg)
        with open_dict(pre):
            pre.data.classes = list(ft.pretrain_classes)
            pre.trainer.max_epochs = int(ft.pretrain_epochs)
            if ft.get("pretrain_lr") is not None:  # the whole network trains here; fine-tuning trains a head
                pre.optimizer.lr = float(ft.pretrain_lr)
            pre.trainer.default_root_dir = f"{cfg.trainer.default_root_dir}/pretrain"
            pre.model.weights_path = None
            pre.test = False
            if pre.get("callbacks") and "freeze_backbone" in pre.callbacks:
                del pre.callbacks["freeze_backbone"]
            for cb in (pre.get("callbacks") or {}).values():  # own checkpoints: fine-tuning must not resume from them
                if cb is not None and cb.get("dirpath"):
                    cb.dirpath = f"{cb.dirpath}/pretrain"
            for lg in (pre.get("logger") or {}).values():
                if lg is not None and "save_dir" in lg:
                    lg.save_dir = f"{lg.save_dir}/pretrain"
        metrics_pre, objects = train(pre)
        from mlcost_pl.finetune.weights import save_weights  # torch: imported once the config has been checked

        save_weights(objects["model"].backbone, path)

    if cfg.model.get("weights") is None:
        if not exists(path):
            raise MissingInputError(f"finetune.backbone_path={path}: no such file (pretrain with finetune.pretrain=true)")
        with open_dict(cfg):
            cfg.model.weights_path = path
    metrics, objects = train(cfg)
    metrics.update({f"pretrain/{k}": v for k, v in metrics_pre.items()})

    if objects["trainer"].is_global_zero:
        rows: list[tuple[str, object]] = [
            ("pretrained from", cfg.model.get("weights") or path),
            ("pretrain classes / wall s", f"{list(ft.pretrain_classes)} / {metrics_pre.get('time/wall_s', 0.0):.1f}" if metrics_pre else "skipped"),
            ("fine-tune classes", list(cfg.data.classes) if cfg.data.get("classes") else "all"),
            ("fine-tune test accuracy", metrics.get("test/acc", float("nan"))),
            ("fine-tune wall s", metrics["time/wall_s"]),
        ]
        print_summary("mlcost_pl finetune", rows)
    return metrics, objects


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the fine-tune test accuracy."""
    metrics, _ = run_cli(finetune, cfg)
    return metrics.get("test/acc")


if __name__ == "__main__":
    main()
