"""StoreConfig: keep the resolved training config inside every checkpoint, so exports and evaluations can rebuild
the model and its data without the original command line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

#: Checkpoint key under which :class:`StoreConfig` writes the training config (a plain ``dict``).
CONFIG_KEY = "mlcost_training_config"


def plain_config(cfg: Any) -> dict[str, Any]:
    """A resolved, plain-``dict`` copy of ``cfg`` (a ``DictConfig`` or mapping) without Hydra's own ``hydra`` node.

    Examples:
        >>> plain_config({"model": {"backbone": "tiny_cnn"}, "hydra": {"run": {}}})
        {'model': {'backbone': 'tiny_cnn'}}
    """
    from omegaconf import DictConfig, OmegaConf, open_dict

    if isinstance(cfg, DictConfig):
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.pop("hydra", None)  # Hydra's own settings: not training config, and partly unresolvable outside a job
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    if not isinstance(cfg, Mapping):
        raise ValueError(f"cfg must be a mapping or DictConfig, got {type(cfg).__name__}")
    return {str(k): v for k, v in dict(cfg).items() if k != "hydra"}


class StoreConfig(Callback):
    """Write the resolved training config into each checkpoint under ``checkpoint["mlcost_training_config"]``.

    ``python -m recipes.export ckpt_path=...`` reads it back to rebuild the model (``model``) and the DataModule
    (``data``) the checkpoint was trained with. ``recipes.train`` adds this callback to every run.

    Args:
        cfg: the training config (``DictConfig`` or mapping). ``None`` stores nothing until :meth:`set_config` is
            called (``recipes.train`` fills it in when the callback comes from ``configs/callbacks/store_config.yaml``).
        key: checkpoint key to write.

    Raises:
        ValueError: ``cfg`` is not a mapping, or ``key`` is empty.

    Logged metrics: none.

    Examples:
        >>> cb = StoreConfig({"model": {"backbone": "tiny_cnn"}})
        >>> ckpt = {}
        >>> cb.on_save_checkpoint(None, None, ckpt)
        >>> ckpt["mlcost_training_config"]["model"]
        {'backbone': 'tiny_cnn'}
    """

    def __init__(self, cfg: Any = None, key: str = CONFIG_KEY) -> None:
        if not key:
            raise ValueError("key must be a non-empty string")
        self.key = key
        self.config: dict[str, Any] | None = None
        if cfg is not None:
            self.set_config(cfg)

    def set_config(self, cfg: Any) -> None:
        """Resolve ``cfg`` now (``${hydra:...}`` interpolations need the running Hydra job) and keep a plain copy."""
        self.config = plain_config(cfg)

    @property
    @override
    def state_key(self) -> str:
        return f"StoreConfig[key={self.key}]"

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint[self.key] = self.config
