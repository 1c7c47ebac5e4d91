"""StoreConfig: keep the resolved training config inside every checkpoint, so exports and evaluations can rebuild
the model and its data without the original command line."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from mlcost_pl.config import CONFIG_KEY, plain_config

__all__ = ["CONFIG_KEY", "StoreConfig", "plain_config"]


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
