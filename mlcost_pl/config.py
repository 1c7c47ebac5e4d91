"""Hydra/OmegaConf glue: resolvers and builders for the config groups. Importing Hydra is optional for users."""

from __future__ import annotations

from typing import Any

from mlcost_pl.runs import run_name_from_overrides

_REGISTERED = False


def _if(condition: Any, then: Any, otherwise: Any) -> Any:
    """``${mlcost_if:${verify},.,${paths.log_dir}/...}``: ``then`` when ``condition`` is set, else ``otherwise``."""
    return then if condition not in (None, "", False) else otherwise


def register_resolvers() -> None:
    """Register mlcost_pl's OmegaConf resolvers (idempotent): ``mlcost_run_name``, ``mlcost_precision``, ``mlcost_if``."""
    global _REGISTERED
    if _REGISTERED:
        return
    from omegaconf import OmegaConf

    from mlcost_pl.precision import precision_resolver

    OmegaConf.register_new_resolver("mlcost_run_name", run_name_from_overrides, replace=True)
    OmegaConf.register_new_resolver("mlcost_if", _if, replace=True)
    OmegaConf.register_new_resolver("mlcost_precision", precision_resolver, replace=True)
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
        raise ValueError(f"{what} must be a mapping of name -> config, got {type(group).__name__}")
    out = []
    for key, node in group.items():
        if node is None:  # a composed entry switched off with `callbacks.name=null`
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ValueError(f"{what}.{key} has no _target_: {node}")
        out.append(instantiate(node))
    return out
