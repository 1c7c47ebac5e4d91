"""Hydra/OmegaConf glue: resolvers and builders for the config groups. Importing Hydra is optional for users."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlcost_pl.errors import UserInputError
from mlcost_pl.runs import run_name_from_overrides

_REGISTERED = False

#: Checkpoint key under which :class:`~mlcost_pl.callbacks.StoreConfig` writes the training config (a plain ``dict``).
CONFIG_KEY = "mlcost_training_config"


def plain_config(cfg: Any) -> dict[str, Any]:
    """A resolved, plain-``dict`` copy of ``cfg`` (a ``DictConfig`` or mapping) without Hydra's own ``hydra`` node.

    Example:
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
        raise UserInputError(f"cfg must be a mapping or DictConfig, got {type(cfg).__name__}")
    return {str(k): v for k, v in dict(cfg).items() if k != "hydra"}


def _if(condition: Any, then: Any, otherwise: Any) -> Any:
    """``${mlcost_if:${verify},.,${paths.log_dir}/...}``: ``then`` when ``condition`` is set, else ``otherwise``."""
    return then if condition not in (None, "", False) else otherwise


def register_resolvers() -> None:
    """Register mlcost_pl's OmegaConf resolvers (idempotent).

    ``mlcost_run_name``, ``mlcost_precision``, ``mlcost_if``, and for launchers (torchrun, SLURM) ``mlcost_num_nodes``,
    ``mlcost_devices``, ``mlcost_accumulation`` (see :mod:`mlcost_pl.distributed.elastic`).
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from omegaconf import OmegaConf

    from mlcost_pl.distributed.elastic import accumulation_resolver, devices_resolver, num_nodes_resolver
    from mlcost_pl.precision import precision_resolver

    OmegaConf.register_new_resolver("mlcost_run_name", run_name_from_overrides, replace=True)
    OmegaConf.register_new_resolver("mlcost_if", _if, replace=True)
    OmegaConf.register_new_resolver("mlcost_precision", precision_resolver, replace=True)
    OmegaConf.register_new_resolver("mlcost_num_nodes", num_nodes_resolver, replace=True)
    OmegaConf.register_new_resolver("mlcost_devices", devices_resolver, replace=True)
    OmegaConf.register_new_resolver("mlcost_accumulation", accumulation_resolver, replace=True)
    _REGISTERED = True


def instantiate_group(group: Any, what: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a keyed group (``callbacks``, ``logger``); ``None`` gives ``[]``.

    Raises:
        ValueError: an entry is not a mapping with ``_target_`` (names the key).
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    if not group:
        return []
    if not isinstance(group, DictConfig):
        raise UserInputError(f"{what} must be a mapping of name -> config, got {type(group).__name__}")
    out = []
    for key, node in group.items():
        if node is None:  # a composed entry switched off with `callbacks.name=null`
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise UserInputError(f"{what}.{key} has no _target_: {node}")
        out.append(instantiate(node))
    return out
